//! `lodestone daemon`: the session, its state directory and DHT, and the
//! HTTP server in front of them, in the foreground until SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use lodestone_daemon::daemon::{Daemon, Settings};
use lodestone_daemon::server::{Access, Server};
use lodestone_daemon::systemd;
use lodestone_engine::session::{Session, SessionConfig, DEFAULT_MAX_CONNECTIONS};
use lodestone_engine::state_dir::{StateDir, StateDirError};
use lodestone_engine::torrent::TorrentConfig;
use tokio::signal::unix::{signal, SignalKind};

use super::get::{local_only, peer_id, run_seed_value, runtime, start_dht_with};
use crate::cli::DaemonArgs;

/// Exit codes systemd's `RestartPreventExitStatus=` can name.
pub const EXIT_CONFIG: u8 = 3;
pub const EXIT_LOCKED: u8 = 4;

const DEFAULT_RPC: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9091);
const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 51413);

/// How long a stop waits for the torrents to save their resume data.
const STOP_GRACE: Duration = Duration::from_secs(15);

fn fail(code: u8, message: impl std::fmt::Display) -> anyhow::Result<ExitCode> {
    eprintln!("lodestone daemon: {message}");
    Ok(ExitCode::from(code))
}

pub fn run(a: &DaemonArgs) -> anyhow::Result<ExitCode> {
    let rpc_bind = a.rpc_bind.unwrap_or(DEFAULT_RPC);
    let listen = a.listen.unwrap_or(DEFAULT_LISTEN);
    let credentials: Option<(String, String)> = None;
    if !rpc_bind.ip().to_canonical().is_loopback()
        && credentials.is_none()
        && !a.allow_unauthenticated_remote
    {
        return fail(
            EXIT_CONFIG,
            format!(
                "the RPC would listen on {rpc_bind}, beyond this machine, with no password: \
                 set a password, bind to 127.0.0.1, or pass --allow-unauthenticated-remote"
            ),
        );
    }
    let state_path = match &a.state_dir {
        Some(p) => p.clone(),
        None => StateDir::default_path()?,
    };
    let download_dir = match &a.download_dir {
        Some(d) => d.clone(),
        None => default_download_dir(&state_path),
    };
    let settings = Settings {
        download_dir,
        incomplete_dir: None,
        start_added_torrents: true,
        speed_limit_down: None,
        speed_limit_up: None,
        alt_speed_down: None,
        alt_speed_up: None,
        alt_speed_enabled: false,
        seed_ratio_limit: None,
        idle_seeding_limit: None,
        peer_limit_global: DEFAULT_MAX_CONNECTIONS,
        peer_limit_per_torrent: 50,
        peer_port: listen.port(),
        dht_enabled: !a.no_dht,
        pex_enabled: true,
        lpd_enabled: !a.no_lpd,
    };
    if a.print_config {
        println!("{settings:#?}");
        return Ok(ExitCode::SUCCESS);
    }
    let state = match StateDir::open(&state_path) {
        Ok(s) => s,
        Err(e @ StateDirError::Locked { .. }) => return fail(EXIT_LOCKED, e),
        Err(e) => return Err(e.into()),
    };
    let access = Access {
        credentials,
        ..Access::default()
    };
    runtime()?.block_on(serve(a, state, settings, listen, rpc_bind, access))
}

/// `~/Downloads`, else beside the state.
fn default_download_dir(state: &std::path::Path) -> PathBuf {
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join("Downloads"))
        .unwrap_or_else(|| state.join("downloads"))
}

async fn serve(
    a: &DaemonArgs,
    state: StateDir,
    settings: Settings,
    listen: SocketAddr,
    rpc_bind: SocketAddr,
    access: Access,
) -> anyhow::Result<ExitCode> {
    let seed = run_seed_value();
    let state_path = state.path().to_owned();
    let dht_file = state_path.join("dht.nodes");
    let public = a.bootstrap.is_empty() && !a.no_dht && !local_only();
    let known = if a.no_dht {
        Vec::new()
    } else {
        lodestone_engine::dht::load_nodes(&dht_file)
    };
    let dht = if a.no_dht {
        None
    } else {
        start_dht_with(&a.bootstrap, public, Some(listen), seed, &known).await?
    };
    let mut template = TorrentConfig::new(settings.download_dir.clone(), peer_id(seed), seed);
    template.dht = dht.clone();
    template.listen = Some(listen);
    template.seed_time = None;
    template.lpd = settings.lpd_enabled && !local_only();
    template.pex = settings.pex_enabled;
    template.max_peers = settings.peer_limit_per_torrent;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (session, events) = Session::start(SessionConfig {
        listen: Some(listen),
        threads,
        seed,
        state: Some(state),
        max_connections: settings.peer_limit_global,
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
    let listener = match tokio::net::TcpListener::bind(rpc_bind).await {
        Ok(l) => l,
        Err(e) => {
            return fail(
                EXIT_LOCKED,
                format!("cannot serve the RPC on {rpc_bind}: {e}"),
            )
        }
    };
    let server = Server::new(daemon.clone(), access);
    let mut http = tokio::spawn(server.serve(listener));
    eprintln!(
        "lodestone daemon: RPC on http://{rpc_bind}/transmission/rpc, peers on {listen}, \
         {} torrents, state in {}",
        daemon.session.len(),
        state_path.display()
    );
    let _ = systemd::notify("READY=1\nSTATUS=serving");
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut save_dht = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(300),
        Duration::from_secs(300),
    );
    let code = loop {
        tokio::select! {
            _ = term.recv() => break ExitCode::SUCCESS,
            _ = int.recv() => break ExitCode::SUCCESS,
            _ = hup.recv() => {
                eprintln!("lodestone daemon: SIGHUP: nothing to reload without a configuration file");
            }
            _ = save_dht.tick() => save_nodes(&dht, &dht_file).await,
            r = &mut http => {
                eprintln!("lodestone daemon: the HTTP server stopped: {r:?}");
                break ExitCode::FAILURE;
            }
        }
    };
    let _ = systemd::notify("STOPPING=1");
    http.abort();
    daemon.session.stop_all();
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    while daemon.session.running() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    save_nodes(&dht, &dht_file).await;
    pump.abort();
    daemon.save();
    Ok(code)
}

async fn save_nodes(dht: &Option<lodestone_engine::dht::Dht>, path: &std::path::Path) {
    if let Some(dht) = dht {
        if let Err(e) = lodestone_engine::dht::save_nodes(path, &dht.nodes().await) {
            eprintln!("lodestone daemon: cannot save {}: {e}", path.display());
        }
    }
}
