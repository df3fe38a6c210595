//! How many connections one client address may hold open at once.
//!
//! Every open connection costs a file descriptor and a task, so a client that opens connections
//! and never finishes its requests could exhaust the process's descriptors; after that not even
//! `/healthz` answers, and the edge takes the cluster out of rotation. So each client address
//! gets `max_connections_per_client` connections. Past that, a connection is still accepted, up
//! to [`HEALTH_ONLY_PER_CLIENT`] more, but serves one request, and only the health and load
//! routes the edge's probes use (see `serve`); everything else answers 429. This matters because
//! behind the edge every request arrives from the edge's address, health probes included: a
//! flood of stalled uploads through the edge fills the edge's budget, and its probes must still
//! get through. Beyond those, connections are closed at once.
//!
//! A client is an IPv4 address or an IPv6 /64 (one host usually owns a whole /64, so counting
//! single IPv6 addresses would be no limit at all).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Connections per client beyond its budget that may still answer health probes. Such
/// connections are short: one request, a short header timeout, no body read.
pub const HEALTH_ONLY_PER_CLIENT: usize = 64;

/// What an accepted connection may do.
#[derive(Debug)]
pub enum Admission {
    /// Within the client's budget: everything.
    Full(Ticket),
    /// Over the budget: one request to a health or load route.
    HealthOnly(Ticket),
    /// Over both: close it.
    Refused,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    full: usize,
    health_only: usize,
}

/// The open connections of every client of one listener.
#[derive(Debug)]
pub struct ClientBudget {
    per_client: usize,
    open: Mutex<HashMap<IpAddr, Counts>>,
}

/// Holds a connection's place in its client's budget; dropping it frees the place.
#[derive(Debug)]
pub struct Ticket {
    budget: Arc<ClientBudget>,
    client: IpAddr,
    health_only: bool,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self.budget.lock();
        if let Some(c) = open.get_mut(&self.client) {
            if self.health_only {
                c.health_only = c.health_only.saturating_sub(1);
            } else {
                c.full = c.full.saturating_sub(1);
            }
            if *c == Counts::default() {
                open.remove(&self.client);
            }
        }
    }
}

/// The key a connection is counted under.
pub fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut seg = v6.segments();
                seg[4..].fill(0);
                IpAddr::V6(seg.into())
            }
        },
    }
}

impl ClientBudget {
    /// `per_client` = 0: no limit.
    pub fn new(per_client: usize) -> Arc<ClientBudget> {
        Arc::new(ClientBudget {
            per_client,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Counts>> {
        // A panic while holding this lock cannot leave the counts inconsistent (each update is
        // one statement), so a poisoned lock is still usable.
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides about a new connection from `ip`.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Admission {
        let client = client_of(ip);
        let ticket = |health_only| Ticket {
            budget: self.clone(),
            client,
            health_only,
        };
        let mut open = self.lock();
        let c = open.entry(client).or_default();
        if self.per_client == 0 || c.full < self.per_client {
            c.full += 1;
            drop(open);
            return Admission::Full(ticket(false));
        }
        if c.health_only < HEALTH_ONLY_PER_CLIENT {
            c.health_only += 1;
            drop(open);
            return Admission::HealthOnly(ticket(true));
        }
        Admission::Refused
    }

    /// Clients with open connections right now (for tests and diagnostics).
    pub fn clients(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_gets_its_budget_then_health_only_then_nothing() {
        let b = ClientBudget::new(2);
        let a = ip("192.0.2.7");
        let full: Vec<_> = (0..2).map(|_| b.admit(a)).collect();
        assert!(full.iter().all(|x| matches!(x, Admission::Full(_))));
        let health: Vec<_> = (0..HEALTH_ONLY_PER_CLIENT).map(|_| b.admit(a)).collect();
        assert!(health.iter().all(|x| matches!(x, Admission::HealthOnly(_))));
        assert!(matches!(b.admit(a), Admission::Refused));
        // Another client is unaffected.
        assert!(matches!(b.admit(ip("192.0.2.8")), Admission::Full(_)));
        // Closing a full connection frees a full place.
        drop(full);
        let again = b.admit(a);
        assert!(matches!(again, Admission::Full(_)));
        drop(health);
        assert_eq!(
            b.clients(),
            1,
            "only 192.0.2.7's new connection is left open"
        );
    }

    #[test]
    fn tickets_free_their_place_and_empty_clients_are_forgotten() {
        let b = ClientBudget::new(1);
        let t = b.admit(ip("10.0.0.1"));
        assert_eq!(b.clients(), 1);
        drop(t);
        assert_eq!(b.clients(), 0);
    }

    #[test]
    fn zero_means_no_limit() {
        let b = ClientBudget::new(0);
        let held: Vec<_> = (0..1000).map(|_| b.admit(ip("10.0.0.1"))).collect();
        assert!(held.iter().all(|x| matches!(x, Admission::Full(_))));
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_and_mapped_v4_as_v4() {
        assert_eq!(
            client_of(ip("2001:db8:1:2:aaaa::1")),
            client_of(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(
            client_of(ip("2001:db8:1:2::1")),
            client_of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(client_of(ip("::ffff:10.1.2.3")), ip("10.1.2.3"));
        assert_eq!(client_of(ip("10.1.2.3")), ip("10.1.2.3"));
    }
}
