//! Network namespaces for tests that need a datacenter to *drop* packets (not refuse them).
//!
//! [`NetNs::create`] makes a namespace named after the test process (`rempart-<pid>-<tag>`)
//! and a veth pair joining it to this namespace, with the two addresses of a private /30
//! (10.231.X.Y/30) that exist only on that pair: traffic goes only to loopback or to the
//! namespaces the test made. [`NetNs::burn`] adds `iptables -j DROP` rules *inside* the
//! namespace (the host's tables are never touched); [`NetNs::heal`] removes them. Dropping the
//! value deletes the namespace, which deletes the veth pair and the rules with it, even when the
//! test fails. Needs root and `ip`/`iptables`: [`NetNs::available`] says why not, and tests
//! print a loud SKIPPED message and return.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// `ip`, looked for in /usr/sbin and /sbin too (not always on a user's PATH).
pub fn ip_bin() -> PathBuf {
    tool("ip")
}

fn tool(name: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin", "/bin"] {
        let p = PathBuf::from(dir).join(name);
        if p.is_file() {
            return p;
        }
    }
    PathBuf::from(name)
}

fn run(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(tool(program))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ns_run(ns: &str, program: &str, args: &[&str]) -> Result<(), String> {
    let program_path = tool(program);
    let program_path = program_path.to_string_lossy();
    let mut all = vec!["netns", "exec", ns, program_path.as_ref()];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// Rules that make a namespace a black hole: every packet in or out is dropped.
const DROP_RULES: [[&str; 4]; 2] = [
    ["INPUT", "-j", "DROP", "-w"],
    ["OUTPUT", "-j", "DROP", "-w"],
];

/// A network namespace joined to the test's namespace by a veth pair; deleted on drop.
pub struct NetNs {
    name: String,
    /// The address on this side of the pair.
    pub host_ip: Ipv4Addr,
    /// The address inside the namespace: origins listen here.
    pub ip: Ipv4Addr,
    /// This side of the veth pair.
    host_if: String,
}

impl NetNs {
    /// Whether namespaces can be made here: Err says why not (not root, no `ip`, no
    /// `iptables`, or the kernel refuses).
    pub fn available() -> Result<(), String> {
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".into());
        }
        for t in ["ip", "iptables"] {
            if !tool(t).is_file() {
                return Err(format!(
                    "`{t}` is not installed (apt-get install iproute2 iptables)"
                ));
            }
        }
        let probe = NetNs::create("probe", 63)?;
        probe.burn()?;
        probe.heal()?;
        Ok(())
    }

    /// Create namespace `rempart-<pid>-<tag>` with the /30 number `index` (0..64) of this
    /// process's block: 10.231.(pid % 250).(4 × index)/30.
    pub fn create(tag: &str, index: u8) -> Result<NetNs, String> {
        if index >= 64 {
            return Err("index must be below 64".into());
        }
        let pid = std::process::id();
        let name = format!("rempart-{pid}-{tag}");
        let third = (pid % 250) as u8;
        let base = 4 * index;
        let host_ip = Ipv4Addr::new(10, 231, third, base + 1);
        let ip = Ipv4Addr::new(10, 231, third, base + 2);
        // Interface names: at most 15 bytes.
        let host_if = format!("rp{}x{index}h", pid % 100_000);
        let ns_if = format!("rp{}x{index}n", pid % 100_000);
        // Leftovers of a crashed run of a process with the same pid.
        let _ = run("ip", &["netns", "del", &name]);
        let _ = run("ip", &["link", "del", &host_if]);
        run("ip", &["netns", "add", &name])?;
        // From here on, dropping `ns` cleans up.
        let ns = NetNs {
            name,
            host_ip,
            ip,
            host_if: host_if.clone(),
        };
        let host_cidr = format!("{host_ip}/30");
        let ns_cidr = format!("{ip}/30");
        run(
            "ip",
            &[
                "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
            ],
        )?;
        run("ip", &["link", "set", &ns_if, "netns", &ns.name])?;
        run("ip", &["addr", "add", &host_cidr, "dev", &host_if])?;
        run("ip", &["link", "set", &host_if, "up"])?;
        ns_run(&ns.name, "ip", &["addr", "add", &ns_cidr, "dev", &ns_if])?;
        ns_run(&ns.name, "ip", &["link", "set", &ns_if, "up"])?;
        ns_run(&ns.name, "ip", &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drop every packet into and out of the namespace: connections hang, new ones time out.
    pub fn burn(&self) -> Result<(), String> {
        for rule in DROP_RULES {
            let mut args = vec!["-I"];
            args.extend_from_slice(&rule);
            ns_run(&self.name, "iptables", &args)?;
        }
        Ok(())
    }

    /// Remove the rules of [`NetNs::burn`].
    pub fn heal(&self) -> Result<(), String> {
        for rule in DROP_RULES {
            let mut args = vec!["-D"];
            args.extend_from_slice(&rule);
            ns_run(&self.name, "iptables", &args)?;
        }
        Ok(())
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Sockets left inside (those of killed origins, still retransmitting into a DROP rule)
        // keep a namespace alive for minutes after `ip netns del`, and its veth pair with it:
        // delete the pair first (both ends go, with the address and route on this side).
        // Origins must be killed before (declare them after the namespace).
        let _ = self.heal();
        if let Err(e) = run("ip", &["link", "del", &self.host_if]) {
            eprintln!("netns cleanup of {}: {e}", self.host_if);
        }
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("netns cleanup of {}: {e}", self.name);
        }
    }
}
