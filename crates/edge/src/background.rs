//! The controller's periodic loops: one health-check poller per cluster, the resolver, the
//! reconciler and (with `[auth]`) the revocation sync. Each loop only waits and calls the
//! controller; what a tick does lives there.

use crate::controller::Controller;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::task::JoinHandle;

/// The running loops. Pollers belong to an epoch: a config reload starts a new one, and the
/// previous epoch's pollers stop at their next tick (a removed cluster's poller included).
#[derive(Default)]
pub struct Background {
    tasks: Mutex<Vec<JoinHandle<()>>>,
    epoch: AtomicU64,
}

impl Background {
    fn tasks(&self) -> MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the current pollers' epoch; returns the new one.
    pub fn next_epoch(&self) -> u64 {
        self.epoch.fetch_add(1, Ordering::SeqCst) + 1
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    pub fn stop(&self) {
        for t in self.tasks().drain(..) {
            t.abort();
        }
    }
}

/// Starts probing, resolving and reconciling.
pub fn spawn(ctl: &Arc<Controller>) {
    spawn_pollers(ctl, ctl.background.epoch());
    let me = ctl.clone();
    let resolver = tokio::spawn(async move { resolve_loop(me).await });
    let me = ctl.clone();
    let reconciler = tokio::spawn(async move { reconcile_loop(me).await });
    ctl.background.tasks().extend([resolver, reconciler]);
    if let Some(auth) = ctl.auth.clone() {
        let every = Duration::from_millis(
            ctl.config()
                .auth
                .as_ref()
                .map_or(1000, |a| a.revocation_sync_ms),
        );
        let sync = tokio::spawn(ctl.revocations.clone().run(ctl.clone(), auth, every));
        ctl.background.tasks().push(sync);
    }
}

/// One poller per configured cluster, for `epoch`.
pub fn spawn_pollers(ctl: &Arc<Controller>, epoch: u64) {
    let names = ctl.cluster_names();
    let mut tasks = ctl.background.tasks();
    tasks.retain(|t| !t.is_finished());
    for name in names {
        let me = ctl.clone();
        tasks.push(tokio::spawn(
            async move { poll_loop(me, name, epoch).await },
        ));
    }
}

async fn poll_loop(ctl: Arc<Controller>, name: String, epoch: u64) {
    let interval = Duration::from_millis(ctl.config().health.interval_ms);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if ctl.background.epoch() != epoch {
            return;
        }
        // Each probe on its own task: a hung cluster's probe waits out its timeout while the
        // next one starts on schedule, so `fall` failures arrive one interval apart after the
        // first timeout instead of one timeout apart (3.5 s to notice a stopped cluster with
        // 500 ms / 1.5 s / fall 2 before, about 2.5 s now). The timeout bounds how many overlap.
        let (me, name) = (ctl.clone(), name.clone());
        tokio::spawn(async move { me.probe(&name).await });
    }
}

async fn resolve_loop(ctl: Arc<Controller>) {
    loop {
        let every = Duration::from_millis(ctl.config().health.resolve_interval_ms);
        tokio::time::sleep(every).await;
        ctl.resolve_all().await;
    }
}

async fn reconcile_loop(ctl: Arc<Controller>) {
    loop {
        tokio::select! {
            _ = ctl.changed.notified() => {}
            // A safety net: nothing should be missed, but a stuck state must not last.
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
        ctl.apply("cluster addresses or health changed", false)
            .await;
    }
}
