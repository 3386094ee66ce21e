//! How a node joins a cluster: [`ClusterConfig`], from code or from the environment.

use std::fmt;
use std::time::Duration;

/// The environment variable whose presence turns cluster mode on: a PostgreSQL URL.
pub const CLUSTER_URL_VAR: &str = "PARTYKIT_CLUSTER_URL";
/// The environment variable with the `host:port` of this node's internal listener.
pub const NODE_ADDR_VAR: &str = "PARTYKIT_NODE_ADDR";
/// The environment variable with the secret that authenticates node-to-node traffic.
pub const CLUSTER_SECRET_VAR: &str = "PARTYKIT_CLUSTER_SECRET";
/// The environment variable with the room lease time-to-live, in milliseconds.
pub const LEASE_TTL_VAR: &str = "PARTYKIT_LEASE_TTL_MS";

/// The lease time-to-live unless told otherwise: 10 seconds.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);

/// The shortest lease time-to-live accepted: renewals run every third of it, and a
/// database round trip must fit well inside one.
const MIN_LEASE_TTL: Duration = Duration::from_millis(300);

/// The shortest secret accepted, in bytes: anyone who can guess it can skip every hook.
const MIN_SECRET_LEN: usize = 16;

/// How a node takes part in a cluster: N copies of the same server against one
/// PostgreSQL database, which holds room storage, alarms, room ownership and node
/// membership. Give it to [`Server::cluster`](crate::Server::cluster), or set the
/// environment variables [`Server::run`](crate::Server::run) reads.
///
/// ```no_run
/// use std::time::Duration;
/// use partykit_runtime::{party, ClusterConfig, Server};
///
/// #[party]
/// #[derive(Default)]
/// struct Main;
///
/// #[party]
/// impl Main {}
///
/// #[tokio::main]
/// async fn main() -> Result<(), partykit_runtime::ServerError> {
///     let cluster = ClusterConfig::new(
///         "postgres://partykit@db.internal/partykit",
///         "10.0.0.7:2999", // where the other nodes reach this one
///         std::env::var("MY_CLUSTER_SECRET").expect("a secret shared by every node"),
///     )
///     .lease_ttl(Duration::from_secs(5));
///     Server::new().party::<Main>().cluster(cluster).run().await
/// }
/// ```
#[derive(Clone)]
pub struct ClusterConfig {
    pub(crate) url: String,
    pub(crate) node_addr: String,
    pub(crate) secret: String,
    pub(crate) lease_ttl: Duration,
}

impl ClusterConfig {
    /// A node of the cluster whose database is at `url` (a PostgreSQL URL, e.g.
    /// `postgres://user:password@host:5432/db`), whose internal listener binds and is
    /// reached at `node_addr` (`host:port`; the other nodes connect to it, so it must not
    /// be a wildcard address), and which shares `secret` with every other node.
    pub fn new(
        url: impl Into<String>,
        node_addr: impl Into<String>,
        secret: impl Into<String>,
    ) -> Self {
        Self {
            url: url.into(),
            node_addr: node_addr.into(),
            secret: secret.into(),
            lease_ttl: DEFAULT_LEASE_TTL,
        }
    }

    /// How long a room's lease lasts without renewal (default 10 s). A node renews its
    /// leases every third of it; when a node dies, its rooms come back on another node
    /// after at most this long. Shorter means faster failover and more database traffic.
    #[must_use]
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// The configuration the environment gives, if `PARTYKIT_CLUSTER_URL` is set:
    /// `PARTYKIT_NODE_ADDR` and `PARTYKIT_CLUSTER_SECRET` are then required, and
    /// `PARTYKIT_LEASE_TTL_MS` is optional.
    ///
    /// # Errors
    ///
    /// A required variable that is missing, or a value that is invalid, names the
    /// variable.
    pub fn from_env() -> Result<Option<Self>, ClusterConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ClusterConfigError> {
        let Some(url) = lookup(CLUSTER_URL_VAR).filter(|url| !url.is_empty()) else {
            return Ok(None);
        };
        let required = |name: &'static str| {
            lookup(name)
                .filter(|value| !value.is_empty())
                .ok_or(ClusterConfigError {
                    variable: name,
                    message: format!("{name} is required when {CLUSTER_URL_VAR} is set"),
                })
        };
        let node_addr = required(NODE_ADDR_VAR)?;
        let secret = required(CLUSTER_SECRET_VAR)?;
        let mut config = Self::new(url, node_addr, secret);
        if let Some(ttl) = lookup(LEASE_TTL_VAR).filter(|ttl| !ttl.is_empty()) {
            let millis: u64 = ttl.parse().map_err(|_| ClusterConfigError {
                variable: LEASE_TTL_VAR,
                message: format!("{LEASE_TTL_VAR}={ttl:?} is not a number of milliseconds"),
            })?;
            config.lease_ttl = Duration::from_millis(millis);
        }
        config.validate()?;
        Ok(Some(config))
    }

    /// Checks the values; called when the server is built.
    pub(crate) fn validate(&self) -> Result<(), ClusterConfigError> {
        if !self.url.starts_with("postgres://") && !self.url.starts_with("postgresql://") {
            return Err(ClusterConfigError {
                variable: CLUSTER_URL_VAR,
                message: format!(
                    "{CLUSTER_URL_VAR} must be a PostgreSQL URL (postgres://user:password@host:port/database)"
                ),
            });
        }
        let port = self
            .node_addr
            .rsplit_once(':')
            .and_then(|(host, port)| (!host.is_empty()).then_some(port))
            .and_then(|port| port.parse::<u16>().ok());
        if port.is_none() {
            return Err(ClusterConfigError {
                variable: NODE_ADDR_VAR,
                message: format!(
                    "{NODE_ADDR_VAR}={:?} is not host:port (e.g. 10.0.0.7:2999)",
                    self.node_addr
                ),
            });
        }
        let host = self.node_addr.rsplit_once(':').map_or("", |(host, _)| host);
        if matches!(host, "0.0.0.0" | "[::]" | "::") {
            return Err(ClusterConfigError {
                variable: NODE_ADDR_VAR,
                message: format!(
                    "{NODE_ADDR_VAR}={:?} is a wildcard address: give the address other nodes reach this one at",
                    self.node_addr
                ),
            });
        }
        if self.secret.len() < MIN_SECRET_LEN {
            return Err(ClusterConfigError {
                variable: CLUSTER_SECRET_VAR,
                message: format!(
                    "{CLUSTER_SECRET_VAR} must be at least {MIN_SECRET_LEN} bytes long"
                ),
            });
        }
        if self.lease_ttl < MIN_LEASE_TTL {
            return Err(ClusterConfigError {
                variable: LEASE_TTL_VAR,
                message: format!(
                    "the lease TTL must be at least {} ms ({LEASE_TTL_VAR})",
                    MIN_LEASE_TTL.as_millis()
                ),
            });
        }
        Ok(())
    }
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Neither the secret nor the database password belongs in a log.
        f.debug_struct("ClusterConfig")
            .field("node_addr", &self.node_addr)
            .field("lease_ttl", &self.lease_ttl)
            .finish_non_exhaustive()
    }
}

/// A cluster setting is missing or invalid; the server refuses to start.
#[derive(Debug, Clone)]
pub struct ClusterConfigError {
    variable: &'static str,
    message: String,
}

impl ClusterConfigError {
    /// The environment variable the setting comes from (also when it was set in code).
    pub fn variable(&self) -> &'static str {
        self.variable
    }
}

impl fmt::Display for ClusterConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ClusterConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    const SECRET: &str = "0123456789abcdef";

    #[test]
    fn no_url_is_single_node() {
        assert!(ClusterConfig::from_lookup(lookup(&[])).unwrap().is_none());
        assert!(
            ClusterConfig::from_lookup(lookup(&[(NODE_ADDR_VAR, "127.0.0.1:1")]))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn every_setting_is_read_and_checked() {
        let url = (CLUSTER_URL_VAR, "postgres://u@127.0.0.1:5432/db");
        let addr = (NODE_ADDR_VAR, "127.0.0.1:2999");
        let secret = (CLUSTER_SECRET_VAR, SECRET);
        let config =
            ClusterConfig::from_lookup(lookup(&[url, addr, secret, (LEASE_TTL_VAR, "2500")]))
                .unwrap()
                .unwrap();
        assert_eq!(config.node_addr, "127.0.0.1:2999");
        assert_eq!(config.lease_ttl, Duration::from_millis(2500));
        let defaulted = ClusterConfig::from_lookup(lookup(&[url, addr, secret]))
            .unwrap()
            .unwrap();
        assert_eq!(defaulted.lease_ttl, DEFAULT_LEASE_TTL);

        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[url, secret], NODE_ADDR_VAR),
            (&[url, addr], CLUSTER_SECRET_VAR),
            (
                &[url, addr, (CLUSTER_SECRET_VAR, "short")],
                CLUSTER_SECRET_VAR,
            ),
            (&[url, (NODE_ADDR_VAR, "no-port"), secret], NODE_ADDR_VAR),
            (
                &[url, (NODE_ADDR_VAR, "0.0.0.0:2999"), secret],
                NODE_ADDR_VAR,
            ),
            (&[url, addr, secret, (LEASE_TTL_VAR, "ten")], LEASE_TTL_VAR),
            (&[url, addr, secret, (LEASE_TTL_VAR, "10")], LEASE_TTL_VAR),
            (
                &[(CLUSTER_URL_VAR, "mysql://x"), addr, secret],
                CLUSTER_URL_VAR,
            ),
        ];
        for (vars, variable) in cases {
            let error = ClusterConfig::from_lookup(lookup(vars)).unwrap_err();
            assert_eq!(error.variable(), *variable, "{vars:?}");
            assert!(error.to_string().contains(variable), "{error}");
        }
    }

    #[test]
    fn debug_hides_the_secret_and_the_url() {
        let config = ClusterConfig::new("postgres://u:pw@h/db", "127.0.0.1:1", SECRET);
        let shown = format!("{config:?}");
        assert!(!shown.contains(SECRET) && !shown.contains("pw"), "{shown}");
    }
}
