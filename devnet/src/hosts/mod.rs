//! Hosts on one machine: each node in its own network namespace with its own address, as on
//! separate hosts, joined by an emulated network that applies faults between them.
//!
//! Layout of subnet `S`: `10.S.0.1` is the machine itself (the chain, the clients, the
//! operator), node `i` is `10.S.0.(i + 2)` in namespace `rill-S-i`. Each namespace has a TUN
//! interface whose packets a router in this process carries ([`link`]); tearing the hosts down
//! (on drop) removes the namespaces and interfaces.

mod link;
mod tun;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context as _, bail};

use link::Link;
pub use link::{Faults, LinkStats};
use tun::Tun;

/// Where hosts live: the subnet, hence every address and namespace name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostsLayout {
    /// `S` in `10.S.0.0/24`.
    pub subnet: u8,
    /// How many nodes.
    pub nodes: usize,
}

impl HostsLayout {
    /// The layout a devnet file's nodes were placed in, if they run on hosts (read from the
    /// first node's listen address, `/ip4/10.S.0.x/…`).
    pub fn of(file: &crate::DevnetFile) -> Option<Self> {
        file.nodes.first()?.netns.as_ref()?;
        let ip: Ipv4Addr = file.nodes[0].listen.split('/').nth(2)?.parse().ok()?;
        Some(Self {
            subnet: ip.octets()[1],
            nodes: file.nodes.len(),
        })
    }

    /// The machine's own address on the hosts' network (chain and clients).
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet, 0, 1)
    }

    /// Node `i`'s address.
    pub fn node_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, self.subnet, 0, 2 + i as u8)
    }

    /// Node `i`'s network namespace.
    pub fn netns(&self, i: usize) -> String {
        format!("rill-{}-{i}", self.subnet)
    }

    fn host_interface(&self) -> String {
        format!("rill{}h", self.subnet)
    }

    fn node_interface(&self, i: usize) -> String {
        format!("rill{}n{i}", self.subnet)
    }
}

/// Why hosts cannot be made on this machine, if they cannot: namespaces need root, `ip`
/// (iproute2) and `/dev/net/tun`.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("network namespaces need root (this process is not)".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("`ip` (iproute2) is not installed".into());
    }
    if let Err(e) = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
    {
        return Some(format!("/dev/net/tun cannot be opened: {e}"));
    }
    static PROBES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = format!("rill-probe-{}-{n}", std::process::id());
    if let Err(e) = ip(&["netns", "add", &probe]) {
        return Some(format!("network namespaces cannot be created: {e}"));
    }
    let _ = ip(&["netns", "del", &probe]);
    None
}

/// For a test that needs hosts: `true` if they can be made here; otherwise prints
/// `SKIPPED <test>: <why>` and returns `false` (the test returns early), or, with
/// `RILL_REQUIRE_HOSTS` set, fails the test.
pub fn available_or_skip(test: &str) -> bool {
    match unavailable() {
        None => true,
        Some(reason) if std::env::var_os("RILL_REQUIRE_HOSTS").is_some() => {
            panic!("{test}: hosts are required (RILL_REQUIRE_HOSTS) but {reason}")
        }
        Some(reason) => {
            eprintln!("SKIPPED {test}: {reason}");
            false
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "`ip {}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// The hosts, up: namespaces, interfaces and the router between them.
pub struct Hosts {
    layout: HostsLayout,
    link: Option<Link>,
}

impl std::fmt::Debug for Hosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hosts")
            .field("layout", &self.layout)
            .finish()
    }
}

impl Hosts {
    /// Creates the namespaces and interfaces of `layout` (removing leftovers of an earlier run
    /// with the same subnet) and starts routing between them; the link's random faults (loss,
    /// jitter) follow `seed`.
    pub fn create(layout: HostsLayout, seed: u64) -> anyhow::Result<Self> {
        if let Some(reason) = unavailable() {
            bail!("cannot put nodes on their own hosts: {reason}");
        }
        anyhow::ensure!((1..=200).contains(&layout.nodes), "between 1 and 200 hosts");
        let mut hosts = Self { layout, link: None };
        hosts.remove();
        let mut tuns = Vec::with_capacity(layout.nodes + 1);
        let host = Tun::create(&layout.host_interface())?;
        let host_cidr = format!("{}/24", layout.host_ip());
        ip(&["addr", "add", &host_cidr, "dev", &host.name])?;
        ip(&["link", "set", &host.name, "up"])?;
        tuns.push(host);
        for i in 0..layout.nodes {
            let netns = layout.netns(i);
            ip(&["netns", "add", &netns])?;
            let tun = Tun::create(&layout.node_interface(i))?;
            ip(&["link", "set", &tun.name, "netns", &netns])?;
            let cidr = format!("{}/24", layout.node_ip(i));
            ip(&["-n", &netns, "addr", "add", &cidr, "dev", &tun.name])?;
            ip(&["-n", &netns, "link", "set", &tun.name, "up"])?;
            ip(&["-n", &netns, "link", "set", "lo", "up"])?;
            tuns.push(tun);
        }
        let base = Ipv4Addr::new(10, layout.subnet, 0, 0);
        hosts.link = Some(Link::start(tuns, base, seed));
        Ok(hosts)
    }

    /// The layout.
    pub fn layout(&self) -> HostsLayout {
        self.layout
    }

    /// Puts `faults` in force between the hosts.
    pub fn set_faults(&self, faults: Faults) {
        self.link().set_faults(faults);
    }

    /// The faults in force.
    pub fn faults(&self) -> Faults {
        self.link().faults()
    }

    /// What the link did so far.
    pub fn stats(&self) -> LinkStats {
        self.link().stats()
    }

    /// Follows the faults file `path` (see `rill-devnet fault`).
    pub fn follow(&mut self, path: PathBuf) {
        self.link.as_mut().expect("the link runs").follow(path);
    }

    fn link(&self) -> &Link {
        self.link.as_ref().expect("the link runs")
    }

    /// Removes the namespaces and the machine's interface (best effort: nothing there is fine).
    fn remove(&self) {
        for i in 0..self.layout.nodes {
            let _ = ip(&["netns", "del", &self.layout.netns(i)]);
        }
        let _ = ip(&["link", "del", &self.layout.host_interface()]);
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        // The router first: closing the TUN descriptors removes the interfaces.
        self.link = None;
        self.remove();
    }
}
