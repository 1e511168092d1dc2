//! `lodestone daemon`: the configuration, the session with its state
//! directory and DHT, and the HTTP server in front of them, in the
//! foreground until SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use lodestone_daemon::config::{Config, Env};
use lodestone_daemon::daemon::{Daemon, Settings};
use lodestone_daemon::server::{Access, Server};
use lodestone_daemon::{background, systemd};
use lodestone_engine::session::{Session, SessionConfig};
use lodestone_engine::state_dir::{StateDir, StateDirError};
use lodestone_engine::torrent::{AbortOnDrop, TorrentConfig};
use tokio::signal::unix::{signal, SignalKind};

use super::get::{local_only, peer_id, run_seed_value, runtime, start_dht_with};
use crate::cli::DaemonArgs;

/// Exit codes systemd's `RestartPreventExitStatus=` can name.
pub const EXIT_CONFIG: u8 = 3;
pub const EXIT_LOCKED: u8 = 4;

/// How long a stop waits for the torrents to save their resume data.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// How often the DHT's routing table is saved.
const SAVE_DHT_EVERY: Duration = Duration::from_secs(300);

fn fail(code: u8, message: impl std::fmt::Display) -> anyhow::Result<ExitCode> {
    eprintln!("lodestone daemon: {message}");
    Ok(ExitCode::from(code))
}

/// The configuration file (found the usual way) with the flags on top.
fn configure(a: &DaemonArgs) -> Result<(Config, Option<std::path::PathBuf>), String> {
    let env = Env::from_process().allowing_unauthenticated_remote(a.allow_unauthenticated_remote);
    let (mut c, path) = Config::discover(a.config.as_deref(), &env).map_err(|e| e.to_string())?;
    if let Some(d) = &a.state_dir {
        c.state_dir = d.clone();
    }
    if let Some(d) = &a.download_dir {
        c.download_dir = d.clone();
    }
    if let Some(b) = a.rpc_bind {
        c.rpc.bind = b;
    }
    if let Some(l) = a.listen {
        c.peers.listen = l;
        c.dht.listen = l;
    }
    if a.no_dht {
        c.dht.enabled = false;
    }
    if a.no_lpd {
        c.peers.lpd = false;
    }
    for dir in [&c.state_dir, &c.download_dir] {
        if !dir.is_absolute() {
            return Err(format!("{}: not an absolute path", dir.display()));
        }
    }
    if !c.rpc.bind.ip().to_canonical().is_loopback()
        && !c.rpc.requires_auth()
        && !c.rpc.allow_unauthenticated_remote
    {
        return Err(format!(
            "the RPC would listen on {}, beyond this machine, with no password: set \
             [rpc] username and password, bind to 127.0.0.1, or pass --allow-unauthenticated-remote",
            c.rpc.bind
        ));
    }
    Ok((c, path))
}

pub fn run(a: &DaemonArgs) -> anyhow::Result<ExitCode> {
    let (config, path) = match configure(a) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    if a.print_config {
        print!("{}", config.to_toml());
        return Ok(ExitCode::SUCCESS);
    }
    if let Err(e) = std::fs::create_dir_all(&config.state_dir) {
        return fail(EXIT_CONFIG, format!("{}: {e}", config.state_dir.display()));
    }
    let state = match StateDir::open(&config.state_dir) {
        Ok(s) => s,
        Err(e @ StateDirError::Locked { .. }) => return fail(EXIT_LOCKED, e),
        Err(e) => return Err(e.into()),
    };
    runtime()?.block_on(serve(a, config, path, state))
}

/// What changes only with a restart, for SIGHUP to say so.
fn fixed(c: &Config) -> (SocketAddr, SocketAddr, std::path::PathBuf, bool) {
    (
        c.rpc.bind,
        c.peers.listen,
        c.state_dir.clone(),
        c.dht.enabled,
    )
}

async fn serve(
    a: &DaemonArgs,
    config: Config,
    config_path: Option<std::path::PathBuf>,
    state: StateDir,
) -> anyhow::Result<ExitCode> {
    let seed = run_seed_value();
    let state_path = state.path().to_owned();
    let dht_file = state_path.join("dht.nodes");
    let listen = config.peers.listen;
    // uTP on the peer port's UDP side; the DHT shares it when it is
    // configured on the same address (the default), as libtorrent's does.
    let utp = if a.no_utp {
        None
    } else {
        let u = lodestone_engine::utp::UtpSocket::bind(
            listen,
            lodestone_utp::Config::default(),
            seed ^ 0x757470,
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind the uTP socket on {listen} (UDP): {e}"))?;
        Some(u)
    };
    let dht = if config.dht.enabled {
        let bootstrap: Vec<String> = if a.bootstrap.is_empty() {
            config.dht.bootstrap.iter().map(|h| h.to_string()).collect()
        } else {
            a.bootstrap.clone()
        };
        // The configured routers are the public ones unless the user
        // named others; a test run (local only) never reaches them.
        let bootstrap: Vec<String> = if local_only() && a.bootstrap.is_empty() {
            Vec::new()
        } else {
            bootstrap
        };
        let known = lodestone_engine::dht::load_nodes(&dht_file);
        start_dht_with(
            &bootstrap,
            false,
            Some(config.dht.listen),
            seed,
            &known,
            utp.as_ref().filter(|u| u.local_addr() == config.dht.listen),
        )
        .await?
    } else {
        None
    };
    let settings = Settings::from_config(&config);
    let mut template = TorrentConfig::new(settings.download_dir.clone(), peer_id(seed), seed);
    template.dht = dht.clone();
    template.listen = Some(listen);
    template.transports = lodestone_engine::peer_io::Transports::new(utp.clone(), true);
    template.seed_time = None;
    template.lpd = settings.lpd_enabled && !local_only();
    template.pex = settings.pex_enabled;
    template.max_peers = settings.peer_limit_per_torrent;
    template.upload_slots = config.peers.upload_slots.get() as usize;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (session, events) = Session::start(SessionConfig {
        listen: Some(listen),
        threads,
        seed,
        state: Some(state),
        max_connections: settings.peer_limit_global,
        utp,
        tcp: true,
    })
    .await?;
    for (path, why) in session.restore(&template)? {
        eprintln!("lodestone daemon: {}: {why}", path.display());
    }
    let daemon = Daemon::new(
        session,
        template,
        settings,
        Some(Daemon::book_file(&state_path)),
    )?;
    let pump = tokio::spawn(daemon.clone().pump(events));
    let listener = match tokio::net::TcpListener::bind(config.rpc.bind).await {
        Ok(l) => l,
        Err(e) => {
            return fail(
                EXIT_LOCKED,
                format!("cannot serve the RPC on {}: {e}", config.rpc.bind),
            )
        }
    };
    let rpc_addr = listener.local_addr()?;
    let server = Server::new(daemon.clone(), Access::from_config(&config.rpc));
    let mut http = tokio::spawn(server.serve(listener));
    let mut tasks = Tasks::start(&daemon, &config);
    eprintln!(
        "lodestone daemon: RPC on http://{rpc_addr}/transmission/rpc, peers on {listen}, \
         {} torrents, state in {}{}",
        daemon.session.len(),
        state_path.display(),
        config_path
            .as_ref()
            .map(|p| format!(", config {}", p.display()))
            .unwrap_or_default()
    );
    let _ = systemd::notify("READY=1\nSTATUS=serving");
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut save_dht =
        tokio::time::interval_at(tokio::time::Instant::now() + SAVE_DHT_EVERY, SAVE_DHT_EVERY);
    let mut current = config;
    let code = loop {
        tokio::select! {
            _ = term.recv() => break ExitCode::SUCCESS,
            _ = int.recv() => break ExitCode::SUCCESS,
            _ = hup.recv() => {
                let _ = systemd::notify("RELOADING=1");
                match configure(a) {
                    Ok((new, _)) => {
                        if fixed(&new) != fixed(&current) {
                            eprintln!("lodestone daemon: SIGHUP: the RPC address, peer address, state directory and DHT switch change only with a restart");
                        }
                        daemon.reload_settings(Settings::from_config(&new));
                        tasks = Tasks::start(&daemon, &new);
                        current = new;
                        eprintln!("lodestone daemon: SIGHUP: configuration reloaded");
                    }
                    Err(e) => eprintln!("lodestone daemon: SIGHUP: kept the old configuration: {e}"),
                }
                let _ = systemd::notify("READY=1");
            }
            _ = save_dht.tick() => save_nodes(&dht, &dht_file).await,
            r = &mut http => {
                eprintln!("lodestone daemon: the HTTP server stopped: {r:?}");
                break ExitCode::FAILURE;
            }
        }
    };
    let _ = systemd::notify("STOPPING=1");
    drop(tasks);
    http.abort();
    daemon.session.stop_all();
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    while daemon.session.running() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the pump take the last events (the runs' totals) before saving.
    tokio::time::sleep(Duration::from_millis(100)).await;
    pump.abort();
    save_nodes(&dht, &dht_file).await;
    daemon.save();
    Ok(code)
}

/// The configuration's timers: stopped when dropped.
struct Tasks {
    _watch: Option<AbortOnDrop>,
    _schedule: Option<AbortOnDrop>,
}

impl Tasks {
    fn start(daemon: &Arc<Daemon>, c: &Config) -> Self {
        Self {
            _watch: c
                .watch_dir
                .clone()
                .map(|dir| AbortOnDrop::spawn(background::watch(daemon.clone(), dir))),
            _schedule: c
                .limits
                .schedule
                .active()
                .map(|s| AbortOnDrop::spawn(background::alt_speed_schedule(daemon.clone(), s))),
        }
    }
}

async fn save_nodes(dht: &Option<lodestone_engine::dht::Dht>, path: &std::path::Path) {
    if let Some(dht) = dht {
        if let Err(e) = lodestone_engine::dht::save_nodes(path, &dht.nodes().await) {
            eprintln!("lodestone daemon: cannot save {}: {e}", path.display());
        }
    }
}
