//! The worker registry and the API tokens ([`WorkerRegistry`](crate::store::WorkerRegistry),
//! [`TokenStore`](crate::store::TokenStore)), written once for both back ends like the job
//! store (`ops::job_store_impl!`): the statements are the same (SQLite accepts Postgres's `$N`
//! placeholders), only the pool and row types differ, so each macro is expanded once in
//! `sqlite.rs` and once in `postgres.rs`.

/// `impl WorkerRegistry for $store` (a store with a `pool` field of its back end).
macro_rules! worker_registry_impl {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl crate::store::WorkerRegistry for $store {
            async fn heartbeat(
                &self,
                worker_id: &str,
                slots: u32,
                ttl: std::time::Duration,
                speed: Option<f64>,
                away: &[crate::model::AwayTask],
            ) -> Result<(), crate::store::StoreError> {
                let now = crate::model::now_millis();
                let expires = now.saturating_add(ttl.as_millis().min(i64::MAX as u128) as i64);
                let speed = speed.filter(|s| s.is_finite() && *s > 0.0);
                let away = (!away.is_empty())
                    .then(|| serde_json::to_string(away).ok())
                    .flatten();
                sqlx::query(crate::shared_sql::HEARTBEAT)
                    .bind(worker_id)
                    .bind(i64::from(slots))
                    .bind(expires)
                    .bind(speed)
                    .bind(away)
                    .execute(&self.pool)
                    .await?;
                // Dropping expired rows here keeps the table the size of the fleet.
                sqlx::query(crate::shared_sql::FORGET_OLD_WORKERS)
                    .bind(now - 3_600_000)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn deregister(&self, worker_id: &str) -> Result<(), crate::store::StoreError> {
                sqlx::query("DELETE FROM workers WHERE id = $1")
                    .bind(worker_id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn live_capacity(&self) -> Result<u32, crate::store::StoreError> {
                let row = sqlx::query(
                    "SELECT CAST(COALESCE(SUM(slots), 0) AS BIGINT) AS total FROM workers \
                     WHERE expires_at >= $1",
                )
                .bind(crate::model::now_millis())
                .fetch_one(&self.pool)
                .await?;
                let total: i64 = sqlx::Row::try_get(&row, "total")?;
                Ok(u32::try_from(total.max(0)).unwrap_or(u32::MAX))
            }

            async fn live_away(
                &self,
            ) -> Result<Vec<crate::model::RunningAttempt>, crate::store::StoreError> {
                let rows = sqlx::query(crate::shared_sql::LIVE_AWAY)
                    .bind(crate::model::now_millis())
                    .fetch_all(&self.pool)
                    .await?;
                let mut away = vec![];
                for row in rows {
                    let json: String = sqlx::Row::try_get(&row, "away")?;
                    let expires_at: i64 = sqlx::Row::try_get(&row, "expires_at")?;
                    away.extend(crate::model::AwayTask::running(&json, expires_at));
                }
                Ok(away)
            }

            async fn live_speed(&self) -> Result<Option<f64>, crate::store::StoreError> {
                let row = sqlx::query(crate::shared_sql::LIVE_SPEED)
                    .bind(crate::model::now_millis())
                    .fetch_one(&self.pool)
                    .await?;
                let speed: Option<f64> = sqlx::Row::try_get(&row, "speed")?;
                Ok(speed.filter(|s| s.is_finite() && *s > 0.0))
            }
        }
    };
}
pub(crate) use worker_registry_impl;

/// `impl TokenStore for $store`, with its row decoders for `$row`.
macro_rules! token_store_impl {
    ($store:ty, $row:ty) => {
        #[async_trait::async_trait]
        impl crate::store::TokenStore for $store {
            async fn create_token(
                &self,
                new: crate::model::NewToken,
            ) -> Result<crate::model::ApiToken, crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO api_tokens (id, name, secret_hash, scopes, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&new.id)
                .bind(&new.name)
                .bind(&new.secret_hash)
                .bind(crate::model::scopes_to_column(&new.scopes))
                .bind(crate::model::now_millis())
                .execute(&self.pool)
                .await?;
                self.get_token(&new.id).await?.ok_or_else(|| {
                    crate::store::StoreError::Corrupt(format!("token {} vanished", new.id))
                })
            }

            async fn get_token(
                &self,
                id: &str,
            ) -> Result<Option<crate::model::ApiToken>, crate::store::StoreError> {
                let row = sqlx::query(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM api_tokens WHERE id = $1"
                ))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                row.as_ref().map(token_from_row).transpose()
            }

            async fn list_tokens(
                &self,
            ) -> Result<Vec<crate::model::ApiToken>, crate::store::StoreError> {
                let rows = sqlx::query(&format!(
                    "SELECT {TOKEN_COLUMNS} FROM api_tokens ORDER BY created_at, id"
                ))
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(token_from_row).collect()
            }

            async fn revoke_token(&self, id: &str) -> Result<bool, crate::store::StoreError> {
                let done = sqlx::query(
                    "UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(crate::model::now_millis())
                .bind(id)
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn touch_token(&self, id: &str) -> Result<(), crate::store::StoreError> {
                sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                    .bind(crate::model::now_millis())
                    .bind(id)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn any_tokens(&self) -> Result<bool, crate::store::StoreError> {
                let row = sqlx::query("SELECT EXISTS (SELECT 1 FROM api_tokens) AS present")
                    .fetch_one(&self.pool)
                    .await?;
                Ok(sqlx::Row::try_get::<bool, _>(&row, "present")?)
            }

            async fn add_revocation(
                &self,
                token_id: &str,
                revoked_at: crate::model::Millis,
            ) -> Result<bool, crate::store::StoreError> {
                let done = sqlx::query(crate::shared_sql::ADD_REVOCATION)
                    .bind(token_id)
                    .bind(revoked_at)
                    .bind(crate::model::now_millis())
                    .execute(&self.pool)
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn revocations_since(
                &self,
                after: i64,
                recent_since: crate::model::Millis,
                limit: u32,
            ) -> Result<Vec<crate::model::RevocationRow>, crate::store::StoreError> {
                let recent = sqlx::query(crate::shared_sql::REVOCATIONS_RECENT)
                    .bind(after)
                    .bind(recent_since)
                    .fetch_all(&self.pool)
                    .await?;
                let next = sqlx::query(crate::shared_sql::REVOCATIONS_AFTER)
                    .bind(after)
                    .bind(i64::from(limit.max(1)))
                    .fetch_all(&self.pool)
                    .await?;
                recent
                    .iter()
                    .chain(&next)
                    .map(revocation_from_row)
                    .collect()
            }
        }

        fn revocation_from_row(
            row: &$row,
        ) -> Result<crate::model::RevocationRow, crate::store::StoreError> {
            Ok(crate::model::RevocationRow {
                seq: sqlx::Row::try_get(row, "seq")?,
                token_id: sqlx::Row::try_get(row, "token_id")?,
                revoked_at: sqlx::Row::try_get(row, "revoked_at")?,
            })
        }

        const TOKEN_COLUMNS: &str =
            "id, name, secret_hash, scopes, created_at, last_used_at, revoked_at";

        fn token_from_row(row: &$row) -> Result<crate::model::ApiToken, crate::store::StoreError> {
            let scopes: String = sqlx::Row::try_get(row, "scopes")?;
            Ok(crate::model::ApiToken {
                id: sqlx::Row::try_get(row, "id")?,
                name: sqlx::Row::try_get(row, "name")?,
                secret_hash: sqlx::Row::try_get(row, "secret_hash")?,
                scopes: crate::model::scopes_from_column(&scopes),
                created_at: sqlx::Row::try_get(row, "created_at")?,
                last_used_at: sqlx::Row::try_get(row, "last_used_at")?,
                revoked_at: sqlx::Row::try_get(row, "revoked_at")?,
            })
        }
    };
}
pub(crate) use token_store_impl;
