//! A second host on this machine for tests that must see a peer that is not loopback: a network
//! namespace joined to this one by a veth pair with its own point-to-point addresses (a /30 from
//! 10.213.0.0/16, chosen per test process). Nothing leaves the machine. Needs root (`ip netns`);
//! removed on drop.

use std::process::Command;

use crate::{Result, TestkitError};

/// A namespace and the two ends of its link.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    host_link: String,
    /// This side's address (the test process's).
    pub host_ip: String,
    /// The namespace's address.
    pub ns_ip: String,
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(TestkitError::io("running `ip` (iproute2)"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(TestkitError::NotReady {
        what: format!("`ip {}`", args.join(" ")),
        detail: format!(
            "{} (network namespaces need root and iproute2)",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    })
}

impl NetNs {
    /// Creates the namespace, the veth pair and the addresses, and brings the links up.
    pub fn create() -> Result<NetNs> {
        // One /30 per process, so parallel test binaries do not collide.
        let n = std::process::id() % 16_000;
        let (third, fourth) = (n / 64, (n % 64) * 4);
        let host_ip = format!("10.213.{third}.{}", fourth + 1);
        let ns_ip = format!("10.213.{third}.{}", fourth + 2);
        let name = format!("sy-test-{}", std::process::id());
        let host_link = format!("syh{}", std::process::id());
        let ns_link = format!("syn{}", std::process::id());
        let ns = NetNs {
            name,
            host_link,
            host_ip,
            ns_ip,
        };
        ip(&["netns", "add", &ns.name])?;
        ip(&[
            "link",
            "add",
            &ns.host_link,
            "type",
            "veth",
            "peer",
            "name",
            &ns_link,
        ])?;
        ip(&["link", "set", &ns_link, "netns", &ns.name])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.host_ip),
            "dev",
            &ns.host_link,
        ])?;
        ip(&["link", "set", &ns.host_link, "up"])?;
        let inside = |args: &[&str]| {
            let mut full = vec!["netns", "exec", &ns.name, "ip"];
            full.extend_from_slice(args);
            ip(&full)
        };
        inside(&["addr", "add", &format!("{}/30", ns.ns_ip), "dev", &ns_link])?;
        inside(&["link", "set", &ns_link, "up"])?;
        inside(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn exec_prefix(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace removes its end of the pair, and with it ours.
        let _ = ip(&["link", "del", &self.host_link]);
        let _ = ip(&["netns", "del", &self.name]);
    }
}
