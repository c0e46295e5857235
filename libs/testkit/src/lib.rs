//! Test support for cross-process scenarios: a real `redis-server` on an ephemeral port (killable
//! and restartable, with or without AOF), the provider simulator (in process or as its binary),
//! the workspace's binaries built on demand, ephemeral ports and readiness waits.
//!
//! Nothing here mocks a Switchyard service: tests get real processes and real sockets.

mod bins;
mod control;
mod error;
mod netns;
mod ports;
mod python;
mod redis_server;
mod redis_topology;
mod service;
mod sim;
mod wait;

pub use bins::{workspace_bin, workspace_root};
pub use control::SimControl;
pub use error::TestkitError;
pub use netns::NetNs;
pub use ports::{free_port, listen_ephemeral};
pub use python::python_with;
pub use redis_server::{RedisOptions, RedisServer};
pub use redis_topology::{RedisCluster, RedisSentinels, SENTINEL_SERVICE};
pub use service::ServiceProcess;
pub use sim::{SimProcess, start_sim};
pub use wait::{wait_for_http, wait_for_tcp};

/// A one-line result type for the testkit.
pub type Result<T, E = TestkitError> = std::result::Result<T, E>;
