//! `peerfold serve`: the runtime, signals and the restart loop. Starts the engine, then the
//! adapters on its handle (the REST API and the control socket), and stops them together.

use std::io::Write;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use peerfold_engine::config::{Address, Home};
use peerfold_engine::{Engine, EngineError, IndexReset, StartOptions};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::api::BrowserTokens;

/// What `peerfold serve` overrides for one run (never saved).
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// QUIC listen addresses instead of the configured ones (when not empty).
    pub listen: Vec<Address>,
    /// The REST API's address instead of the configured one.
    pub api: Option<String>,
}

impl ServeOptions {
    /// After a run: addresses given on the command line with port 0 keep the ports they
    /// got, so a restart leaves the daemon where its clients and peers know it is.
    fn keep_ports(&mut self, running: &Running) {
        if self.api.is_some() {
            self.api = Some(running.api_address.to_string());
        }
        let bound = running.engine.listening();
        let all_quic = self
            .listen
            .iter()
            .all(|a| matches!(a, Address::Quic { .. }));
        if !self.listen.is_empty() && all_quic && bound.len() == self.listen.len() {
            self.listen = bound
                .iter()
                .map(|a| Address::quic(a.ip().to_string(), a.port()))
                .collect();
        }
    }
}

/// How long a restart keeps trying to bind while the previous run's sockets close.
const REBIND_FOR: Duration = Duration::from_secs(10);

/// Runs the daemon of `home` until a signal or a shutdown request; a restart request
/// starts it again in the same process (and PID). `banner` gets what a user needs to know.
pub fn serve(home: &Home, options: ServeOptions, banner: &mut impl Write) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        // Blocking work (SQLite, fsync, file reads) is bounded where it starts; this bounds
        // the rest. Each thread costs a stack and, in glibc, may take a malloc arena.
        .max_blocking_threads(64)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let mut options = options;
    let tokens = BrowserTokens::default();
    runtime.block_on(async {
        for round in 0.. {
            let running = Running::start(home, &options, round > 0, &tokens).await?;
            let engine = &running.engine;
            let addrs: Vec<String> = engine.listening().iter().map(ToString::to_string).collect();
            let mut text = format!(
                "Device ID: {}\nListening on {} (QUIC)\n",
                engine.device_id(),
                addrs.join(", ")
            );
            text += &format!(
                "REST API on http://{} (key: `peerfold api-key`)\nWeb GUI on http://{}/\n",
                running.api_address, running.api_address
            );
            // After a restart nobody may read stdout any more: that must not stop the daemon.
            let printed = banner
                .write_all(text.as_bytes())
                .and_then(|()| banner.flush());
            if round == 0 {
                printed?;
            }
            tokio::select! {
                signal = wait_for_stop_signal() => signal?,
                () = engine.stopped() => {}
            }
            let restart = engine.restart_requested();
            let reset = engine.reset_requested();
            options.keep_ports(&running);
            running.stop().await;
            if !restart {
                return Ok(());
            }
            if let Some(reset) = reset {
                reset_index(home, &reset)?;
            }
            let _ = writeln!(banner, "Restarting");
        }
        Ok(())
    })
}

/// Erases an index between two runs (nothing else has it open then).
fn reset_index(home: &Home, reset: &IndexReset) -> Result<()> {
    let folder = match reset {
        IndexReset::All => None,
        IndexReset::Folder(id) => Some(id.as_str()),
    };
    let erased = home
        .store()
        .context("opening the index to reset it")?
        .forget_folders(folder)
        .context("erasing the index")?;
    tracing::info!(
        ?reset,
        folders = erased,
        "index erased; it is rebuilt from disk and peers"
    );
    Ok(())
}

/// The engine and its adapters.
struct Running {
    engine: Engine,
    api_address: SocketAddr,
    adapters: TaskTracker,
    stop_adapters: CancellationToken,
}

impl Running {
    /// Starts the engine, then binds the REST API and the control socket. After a restart
    /// the previous run's sockets may still be closing: binding is retried for a while.
    async fn start(
        home: &Home,
        options: &ServeOptions,
        retry_bind: bool,
        tokens: &BrowserTokens,
    ) -> Result<Self> {
        let deadline = Instant::now() + REBIND_FOR;
        loop {
            match Self::try_start(home, options, tokens).await {
                Err(StartError::Engine(e))
                    if e.is_listen() && retry_bind && Instant::now() < deadline => {}
                Err(StartError::Api(_)) if retry_bind && Instant::now() < deadline => {}
                other => return other.map_err(anyhow::Error::from),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn try_start(
        home: &Home,
        options: &ServeOptions,
        tokens: &BrowserTokens,
    ) -> Result<Self, StartError> {
        let start = StartOptions {
            listen: options.listen.clone(),
        };
        let engine = Engine::start(home, start).await?;
        let api = options
            .api
            .clone()
            .unwrap_or_else(|| engine.config().api.address.clone());
        let listener = match tokio::net::TcpListener::bind(&api).await {
            Ok(listener) => listener,
            Err(source) => {
                engine.shutdown().await;
                return Err(StartError::Api(ApiBindError {
                    address: api,
                    source,
                }));
            }
        };
        let api_address = listener.local_addr().map_err(|source| {
            StartError::Api(ApiBindError {
                address: api.clone(),
                source,
            })
        })?;
        let (adapters, stop_adapters) = (TaskTracker::new(), CancellationToken::new());
        adapters.spawn(crate::api::serve(
            engine.clone(),
            listener,
            stop_adapters.clone(),
            tokens.clone(),
        ));
        match crate::control::bind(home) {
            Ok(listener) => {
                adapters.spawn(crate::control::serve(
                    engine.clone(),
                    listener,
                    crate::control::socket_path(home),
                    api_address,
                    stop_adapters.clone(),
                ));
            }
            Err(e) => warn!(error = %e, "no control socket; `peerfold status` will not work"),
        }
        Ok(Self {
            engine,
            api_address,
            adapters,
            stop_adapters,
        })
    }

    /// Stops the adapters, then the engine; returns once the engine's sockets are free.
    async fn stop(self) {
        self.stop_adapters.cancel();
        self.adapters.close();
        if tokio::time::timeout(Duration::from_secs(10), self.adapters.wait())
            .await
            .is_err()
        {
            warn!("the REST API or control socket did not stop within 10 s");
        }
        self.engine.shutdown().await;
    }
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Api(ApiBindError),
}

#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on {address}: {source} (the REST API; choose another with --api or [api] address)"
)]
struct ApiBindError {
    address: String,
    source: std::io::Error,
}

async fn wait_for_stop_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("waiting for Ctrl-C")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
