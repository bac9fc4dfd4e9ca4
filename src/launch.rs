//! Start-up: from a validated configuration to a running pingora server (proxy listeners,
//! admin service, background tasks), failing fast and whole when something cannot start.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::HttpServerOptions;
use pingora::listeners::tls::TlsSettings;
use pingora::listeners::ListenerConfig;
use pingora::protocols::http::v2::server::default_h2_options;
use pingora::protocols::ALPN;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::{ExecutionPhase, RunArgs, Server, ShutdownWatch};
use pingora::services::background::{background_service, BackgroundService};
use pingora::services::listening::Service;

use crate::admin::AdminService;
use crate::config::Config;
use crate::proxy::edge::{Edge, EdgeListener};
use crate::proxy::RempartProxy;
use crate::runtime::Runtime;
use crate::runtime_dir::InstanceFiles;
use crate::shield::connections::AcceptFilter;
use crate::telemetry::busy;
use crate::upgrade::handover::{ShutdownSignals, Successor};
use crate::upgrade::takeover::OldProcess;
use crate::upstream::health::HealthChecks;

/// Why Rempart could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {address}: {source}")]
    Bind {
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("{0}")]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error("{0}")]
    RuntimeDir(#[from] crate::runtime_dir::RuntimeDirError),
    #[error("upgrade failed: {0}")]
    Upgrade(#[from] crate::upgrade::takeover::TakeoverError),
    #[error("{0}")]
    Clock(#[from] crate::schedule::clock::ClockError),
}

/// How the process was asked to run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mode {
    pub daemon: bool,
    pub upgrade: bool,
}

/// Check that every proxy listener can bind, and bind the admin listener for good. A taken port
/// is an error here, before anything starts (pingora alone would retry, then run without it).
/// During an upgrade the listeners come from the old process, and the admin port is bound by
/// the admin service once the old process lets it go.
fn bind_listeners(config: &Config, mode: Mode) -> Result<Option<TcpListener>, StartError> {
    if mode.upgrade {
        return Ok(None);
    }
    for listener in &config.listeners {
        TcpListener::bind(listener.address).map_err(|source| StartError::Bind {
            address: listener.address,
            source,
        })?;
    }
    let address = config.admin.address;
    TcpListener::bind(address)
        .map(Some)
        .map_err(|source| StartError::Bind { address, source })
}

fn server_conf(config: &Config, mode: Mode, files: &InstanceFiles) -> ServerConf {
    let mut conf = ServerConf {
        threads: config.server.threads,
        grace_period_seconds: Some(config.server.grace_period.as_secs_f64().ceil() as u64),
        graceful_shutdown_timeout_seconds: Some(1),
        daemon: mode.daemon,
        // Each worker thread runs its own connections start to end (pingora's no-steal runtime):
        // a connection's task, its pooled upstream connections and its caches stay on one core.
        // With two workers on two cores, 15-30% more requests per second than work stealing
        // (bench/RESULTS.md, 2026-12-02).
        work_stealing: false,
        ..ServerConf::default()
    };
    conf.pid_file = files.pid_file.display().to_string();
    conf.upgrade_sock = files.upgrade_sock.display().to_string();
    conf
}

/// The pid file and the upgrade socket of this instance, in `server.runtime_dir`.
fn instance_files(config: &Config) -> InstanceFiles {
    InstanceFiles::new(&config.server.runtime_dir, config.admin.address.port())
}

/// Build the pingora server for this configuration and run it until shutdown.
pub fn run(config: Config, mode: Mode) -> Result<(), StartError> {
    // The runtime directory first: it must be Rempart's alone before a socket goes there.
    let files = instance_files(&config);
    crate::runtime_dir::prepare(&config.server.runtime_dir)?;
    crate::runtime_dir::check_socket(&files.upgrade_sock)?;
    // An upgrade checks the process it takes over from before anything else: a refusal leaves
    // that process alone, and costs nothing.
    let old = if mode.upgrade {
        Some(OldProcess::find(&files)?)
    } else {
        None
    };
    let queue_key = crate::runtime_dir::queue_key(&config.server.runtime_dir)?;
    let admin_listener = bind_listeners(&config, mode)?;
    let conf = server_conf(&config, mode, &files);
    let successor = Successor::of_this_process(&config.source, mode.daemon);
    let listeners = config.listeners.clone();
    let clock = crate::schedule::clock::from_env()?;
    let runtime = Runtime::with_clock(config, queue_key, clock)?;

    let opt = Opt {
        upgrade: mode.upgrade,
        daemon: mode.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    let phases = server.watch_execution_phase();
    let conf = server.configuration.clone();

    let server_settings = runtime.load().config.server.clone();
    let mut proxy = HttpProxy::new(RempartProxy::new(runtime.clone()), conf.clone());
    let mut options = HttpServerOptions::default();
    // HTTP/2 connections with no stream open close after the keep-alive timeout, as HTTP/1
    // ones do between requests.
    options.h2_idle_timeout = Some(server_settings.keepalive_timeout);
    proxy.server_options = Some(options);
    let mut h2_options = default_h2_options();
    h2_options
        .max_header_list_size(u32::try_from(server_settings.max_header_bytes).unwrap_or(u32::MAX));
    proxy.h2_options = Some(h2_options);
    proxy.handle_init_modules();

    // Every listener is plain TCP for pingora: TLS handshakes are the edge's, so that they are
    // timed and counted from accept.
    let mut edge_listeners = Vec::with_capacity(listeners.len());
    for (index, listener) in listeners.iter().enumerate() {
        let tls = match (
            &listener.tls,
            runtime.resolvers.get(index).cloned().flatten(),
        ) {
            (Some(tls), Some(resolver)) => {
                let mut settings =
                    TlsSettings::intermediate("", "").map_err(|e| StartError::Bind {
                        address: listener.address,
                        source: std::io::Error::other(e.to_string()),
                    })?;
                settings.set_cert_resolver(resolver);
                if tls.http2 {
                    settings.enable_h2();
                } else {
                    settings.set_alpn(ALPN::H1);
                }
                Some(Arc::new(settings.build()))
            }
            _ => None,
        };
        edge_listeners.push(EdgeListener {
            address: listener.address,
            tls,
        });
    }
    let edge = Edge::new(proxy, runtime.clone(), edge_listeners);
    let mut service = Service::new("rempart proxy".to_string(), edge);
    // shield.deny and the connection caps, before anything else.
    service.set_connection_filter(Arc::new(AcceptFilter::new(runtime.clone())));
    for listener in &listeners {
        service.add_listener(
            ListenerConfig::tcp(listener.address.to_string())
                .l4_buffer(crate::proxy::edge::CLIENT_BUFFERS),
        );
    }
    server.add_service(service);
    server.add_service(background_service(
        "rempart admin",
        AdminService::new(runtime.clone(), admin_listener),
    ));
    server.add_service(background_service(
        "rempart health checks",
        HealthChecks::new(runtime.clone()),
    ));
    server.add_service(background_service(
        "rempart queue ticks",
        QueueTicks {
            runtime: runtime.clone(),
        },
    ));
    server.add_service(background_service(
        "rempart history",
        crate::history::sampler::Sampler::new(runtime.clone()),
    ));
    server.add_service(background_service(
        "rempart shield sweep",
        ShieldSweep {
            runtime: runtime.clone(),
        },
    ));
    if let Some(cluster) = runtime.cluster.clone() {
        server.add_service(background_service(
            "rempart cluster link",
            crate::cluster::link::Link {
                runtime: runtime.clone(),
                cluster,
            },
        ));
    }
    server.add_service(background_service(
        "rempart schedules",
        crate::schedule::Scheduler::new(runtime.clone()),
    ));
    server.add_service(background_service(
        "rempart lifecycle",
        Lifecycle {
            runtime: runtime.clone(),
            phases: std::sync::Mutex::new(Some(phases)),
            addresses: listeners.iter().map(|l| l.address).collect(),
            successor,
            pid_file: files.pid_file.clone(),
        },
    ));

    if config_admin_token_missing(&runtime) {
        tracing::warn!(
            admin = %runtime.load().config.admin.address,
            "the admin API has no token: any local user or process can drain datacenters and lift bans; set admin.token"
        );
    }
    install_startup_panic_guard();
    tracing::info!(
        listeners = ?listeners.iter().map(|l| l.address).collect::<Vec<_>>(),
        "rempart starting"
    );
    // Everything that can fail at start has been built: only now take the sockets of an old
    // process (pingora's bootstrap receives them; the old process is signalled once this one
    // listens on the upgrade socket).
    // Then this process serves the instance and names itself in the pid file (a daemon's is
    // written by pingora once forked).
    match old {
        Some(old) => {
            let signaller = old.signal_when_listening(files.upgrade_sock.clone());
            server.bootstrap();
            signaller.taken_over();
            // The old process is handing over already: serve whatever happens to the pid file.
            if !mode.daemon {
                if let Err(e) = crate::runtime_dir::write_pid_file(&files.pid_file) {
                    tracing::error!(error = %e, "the next upgrade will not find this process");
                }
            }
        }
        None => {
            if !mode.daemon {
                crate::runtime_dir::write_pid_file(&files.pid_file)?;
            }
            server.bootstrap();
        }
    }
    server.run(RunArgs {
        shutdown_signal: Box::new(ShutdownSignals::new(
            files.upgrade_sock.clone(),
            runtime.clone(),
        )),
    });
    crate::runtime_dir::remove_pid_file_if_ours(&files.pid_file);
    Ok(())
}

fn config_admin_token_missing(runtime: &Runtime) -> bool {
    runtime.load().config.admin.token.is_none()
}

/// pingora reports a listener it cannot build, or a certificate it cannot load, by panicking
/// inside that service's runtime and leaving the rest of the process running. Rempart stops
/// whole instead: such a panic ends the process with exit code 1.
fn install_startup_panic_guard() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("");
        if message.contains("Failed to build listeners")
            || message.contains("Failed to load provided certificates")
        {
            eprintln!("rempart: a listener could not start: {message}");
            std::process::exit(1);
        }
    }));
}

/// Background work tied to the life of the process: the access-log writer, readiness once
/// the listeners accept, and the end of a graceful drain.
struct Lifecycle {
    runtime: Arc<Runtime>,
    /// pingora's execution phases: a SIGQUIT (upgrade) starts the drain before the shutdown.
    phases: std::sync::Mutex<Option<tokio::sync::broadcast::Receiver<ExecutionPhase>>>,
    addresses: Vec<SocketAddr>,
    /// What SIGUSR2 starts to take over from this process.
    successor: Option<Successor>,
    /// Removed at exit when it still names this process.
    pid_file: std::path::PathBuf,
}

/// The TCP ports with a socket in LISTEN state on this machine, from `/proc/net/tcp{,6}`.
/// Watching the kernel's table tells when pingora has bound the listeners without opening
/// connections to them (a TLS listener would log each probe as a failed handshake).
fn listening_ports() -> std::io::Result<std::collections::HashSet<u16>> {
    let mut ports = std::collections::HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = match std::fs::read_to_string(table) {
            Ok(text) => text,
            Err(e) if table.ends_with('6') && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for line in text.lines().skip(1) {
            let mut fields = line.split_whitespace();
            let local = fields.nth(1);
            let state = fields.nth(1);
            if let (Some(local), Some("0A")) = (local, state) {
                if let Some(port) = local
                    .rsplit_once(':')
                    .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                {
                    ports.insert(port);
                }
            }
        }
    }
    Ok(ports)
}

/// Whether every address accepts connections: by the kernel's table where there is one, else
/// by connecting.
fn all_listening(addresses: &[SocketAddr]) -> bool {
    match listening_ports() {
        Ok(ports) => addresses.iter().all(|a| ports.contains(&a.port())),
        Err(_) => addresses.iter().all(|address| {
            let mut probe = *address;
            if address.ip().is_unspecified() {
                probe.set_ip(match address {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            TcpStream::connect_timeout(&probe, Duration::from_millis(100)).is_ok()
        }),
    }
}

#[async_trait]
impl BackgroundService for Lifecycle {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if let Err(e) = self.runtime.access_log.start_writer() {
            tracing::error!(error = %e, "cannot open the access log");
            std::process::exit(1);
        }

        // Ready once every listener accepts a connection (bounded: 30 s).
        let runtime = self.runtime.clone();
        let addresses = self.addresses.clone();
        tokio::spawn(async move {
            for _ in 0..1500 {
                if all_listening(&addresses) {
                    runtime.listening.store(true, Ordering::Release);
                    tracing::info!("rempart ready");
                    // systemd (Type=notify): ready, and after an upgrade the new main process.
                    crate::systemd::ready();
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tracing::error!("listeners did not come up within 30 s");
        });

        // SIGHUP reloads the file, and so does a change of it when `server.watch_config` is on.
        // Signal handlers are installed here, after any daemon fork.
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(mut hangup) => {
                let runtime = self.runtime.clone();
                tokio::spawn(async move {
                    while hangup.recv().await.is_some() {
                        tracing::info!("SIGHUP: reloading the configuration");
                        let _ = crate::reload::reload(&runtime);
                    }
                });
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot handle SIGHUP: reload through the admin API")
            }
        }
        tokio::spawn(watch_config(self.runtime.clone()));

        // SIGUSR2 starts the new binary, which takes the listening sockets over (an upgrade in
        // one signal, from inside the service when systemd runs it).
        if let Some(successor) = self.successor.clone() {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2()) {
                Ok(mut usr2) => {
                    let runtime = self.runtime.clone();
                    tokio::spawn(async move {
                        while usr2.recv().await.is_some() {
                            successor.start(runtime.draining.load(Ordering::Acquire));
                        }
                    });
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot handle SIGUSR2: upgrade with rempart -u")
                }
            }
        }

        // On SIGQUIT pingora sends the listening sockets to the new process, then keeps this one
        // accepting a few seconds before it shuts down: drain from the first moment, so that
        // clients leave their keep-alive connections for the new process.
        let phases = self.phases.lock().ok().and_then(|mut slot| slot.take());
        if let Some(mut phases) = phases {
            let runtime = self.runtime.clone();
            tokio::spawn(async move {
                while let Ok(phase) = phases.recv().await {
                    if matches!(
                        phase,
                        ExecutionPhase::GracefulUpgradeTransferringFds
                            | ExecutionPhase::GracefulUpgradeCloseTimeout
                            | ExecutionPhase::GracefulTerminate
                    ) {
                        runtime.draining.store(true, Ordering::Release);
                    }
                }
            });
        }

        // Graceful drain: pingora stops accepting and then waits the whole grace period;
        // Rempart leaves as soon as the requests in flight are done.
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                return;
            }
        }
        self.runtime.draining.store(true, Ordering::Release);
        tracing::info!("draining: waiting for requests in flight");
        // Requests in flight and request heads being read must both be done, twice in a row
        // (a head hands over to its request between the two counts).
        let mut idle_checks = 0;
        loop {
            if busy(&self.runtime.metrics) <= 0 {
                idle_checks += 1;
            } else {
                idle_checks = 0;
            }
            if idle_checks >= 2 {
                // Give the log writer a moment to flush the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                crate::runtime_dir::remove_pid_file_if_ours(&self.pid_file);
                tracing::info!("drained, exiting");
                std::process::exit(0);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Reload when the configuration file changes (`server.watch_config: true`), checked once a
/// second by modification time and size.
async fn watch_config(runtime: Arc<Runtime>) {
    let stamp = |path: &std::path::Path| {
        std::fs::metadata(path)
            .ok()
            .map(|m| (m.modified().ok(), m.len()))
    };
    let mut last = stamp(&runtime.load().config.source);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let snapshot = runtime.load();
        let now = stamp(&snapshot.config.source);
        if now != last {
            last = now;
            if snapshot.config.server.watch_config {
                tracing::info!("configuration file changed: reloading");
                let _ = crate::reload::reload(&runtime);
            }
        }
    }
}

/// Every 50 ms, let each login queue admit what its upstream has room for: room freed by
/// requests of other routes on servers with `max_in_flight`, or a datacenter back up.
struct QueueTicks {
    runtime: Arc<Runtime>,
}

#[async_trait]
impl BackgroundService for QueueTicks {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut every = tokio::time::interval(Duration::from_millis(50));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    for queue in &self.runtime.load().queues {
                        queue.core.poke();
                    }
                }
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }
}

/// The shield's housekeeping: every few seconds, forget idle limiter keys and give their memory
/// back, drop ended bans, and update the gauges.
struct ShieldSweep {
    runtime: Arc<Runtime>,
}

#[async_trait]
impl BackgroundService for ShieldSweep {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut every = tokio::time::interval(crate::shield::SWEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    let snapshot = self.runtime.load();
                    let shield = snapshot.shield.clone();
                    let metrics = self.runtime.metrics.clone();
                    // Sweeping a million keys takes a while: off the async threads.
                    let _ = tokio::task::spawn_blocking(move || shield.sweep(&metrics)).await;
                }
                _ = shutdown.changed() => {
                    if *shutdown.borrow() {
                        return;
                    }
                }
            }
        }
    }
}
