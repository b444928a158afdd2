//! The daemon's HTTP server (`[http]`): the dashboard ([`pages`]), the JSON
//! API under `/api/v1` ([`api`]), and `/metrics`, `/healthz`, `/readyz`
//! ([`health`]).
//!
//! axum on a small tokio runtime of its own thread, started with the daemon
//! and stopped with it: never on the scan's hot path. Handlers read the
//! store on their own SQLite connections (WAL: readers never block the
//! daemon's writer), through [`AppState::read`] and [`AppState::write`],
//! on tokio's blocking pool; what only the daemon knows (the schedule, the
//! sweep under way) comes from [`DaemonHandle::live`], and what only the
//! daemon may do (reload monitors, scan now) goes through
//! [`DaemonHandle::send`]. Every asset is embedded in the binary.

pub mod api;
pub mod auth;
pub mod health;
pub mod pages;
pub mod problem;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use axum::Router;
use thiserror::Error;
use tokio::sync::oneshot;

use crate::config::{AgentLabels, HttpSettings};
use crate::daemon::control::DaemonHandle;
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use auth::{Auth, TokensError};

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum HttpError {
    #[error("http.tokens: {0}")]
    Tokens(#[from] TokensError),
    #[error("cannot listen on {listen} (http.listen): {source}")]
    Listen {
        listen: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the HTTP server's runtime: {0}")]
    Runtime(#[source] std::io::Error),
}

/// A failure inside a handler that reads or writes the store.
#[derive(Debug, Error)]
pub enum StoreAccessError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the store task failed: {0}")]
    Task(String),
}

/// What every handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    store_path: PathBuf,
    /// Idle store connections, reused.
    pool: Mutex<Vec<Store>>,
    daemon: DaemonHandle,
    metrics: Arc<Metrics>,
    auth: Auth,
    /// What a monitor written here may name in `agent_label`.
    cluster_labels: RwLock<Option<Vec<String>>>,
}

/// Most idle store connections kept.
const POOL_SIZE: usize = 4;

impl AppState {
    pub fn new(
        store_path: &Path,
        daemon: DaemonHandle,
        metrics: Arc<Metrics>,
        auth: Auth,
    ) -> AppState {
        AppState {
            inner: Arc::new(Shared {
                store_path: store_path.to_path_buf(),
                pool: Mutex::new(Vec::new()),
                daemon,
                metrics,
                auth,
                cluster_labels: RwLock::new(None),
            }),
        }
    }

    /// The `[cluster]` labels a monitor written through the API or the
    /// settings page may name in `agent_label` (with `any`); `None`: no
    /// cluster (the default), where `agent_label` is a warning.
    pub fn cluster_labels(&self) -> Option<Vec<String>> {
        self.inner
            .cluster_labels
            .read()
            .map_or(None, |labels| labels.clone())
    }

    /// Sets what [`AppState::cluster_labels`] gives: the daemon's
    /// [`crate::config::Config::agent_labels`], at start and at each reload.
    pub fn set_cluster_labels(&self, labels: AgentLabels<'_>) {
        if let Ok(mut held) = self.inner.cluster_labels.write() {
            *held = labels.map(<[String]>::to_vec);
        }
    }

    pub fn daemon(&self) -> &DaemonHandle {
        &self.inner.daemon
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    pub fn store_path(&self) -> &Path {
        &self.inner.store_path
    }

    /// Runs `f` on a store connection, on the blocking pool.
    pub async fn read<T, F>(&self, f: F) -> Result<T, StoreAccessError>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        self.write(move |store: &mut Store| f(store).map_err(StoreAccessError::Store))
            .await
    }

    /// Runs `f` on a store connection that may write, on the blocking pool.
    pub async fn write<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreAccessError> + Send + 'static,
        F: FnOnce(&mut Store) -> Result<T, E> + Send + 'static,
    {
        let state = self.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let mut store = match state.take_connection() {
                Ok(store) => store,
                Err(e) => return Err(E::from(StoreAccessError::Store(e))),
            };
            let result = f(&mut store);
            state.give_back(store);
            result
        })
        .await;
        match joined {
            Ok(result) => result,
            Err(e) => Err(E::from(StoreAccessError::Task(e.to_string()))),
        }
    }

    fn take_connection(&self) -> Result<Store, StoreError> {
        let idle = self.inner.pool.lock().ok().and_then(|mut pool| pool.pop());
        match idle {
            Some(store) => Ok(store),
            None => Store::connect(&self.inner.store_path),
        }
    }

    fn give_back(&self, store: Store) {
        if let Ok(mut pool) = self.inner.pool.lock()
            && pool.len() < POOL_SIZE
        {
            pool.push(store);
        }
    }
}

/// Every route.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(pages::routes())
        .nest("/api/v1", api::routes())
        .merge(health::routes())
        .with_state(state)
}

/// The running server.
#[derive(Debug)]
pub struct HttpServer {
    local_addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Binds `settings.listen` (an error at once if it cannot) and serves
    /// [`router`] on a thread of its own until [`HttpServer::shutdown`].
    pub fn start(settings: &HttpSettings, state: AppState) -> Result<HttpServer, HttpError> {
        let listener =
            std::net::TcpListener::bind(settings.listen).map_err(|source| HttpError::Listen {
                listen: settings.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| HttpError::Listen {
            listen: settings.listen,
            source,
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|source| HttpError::Listen {
                listen: settings.listen,
                source,
            })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(8)
            .thread_name("palisade-http")
            .enable_all()
            .build()
            .map_err(HttpError::Runtime)?;
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(state);
        let thread = std::thread::Builder::new()
            .name("palisade-http".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            tracing::error!("the HTTP server cannot use its socket: {e}");
                            return;
                        }
                    };
                    let served = axum::serve(listener, app)
                        .with_graceful_shutdown(async {
                            let _ = stopped.await;
                        })
                        .await;
                    if let Err(e) = served {
                        tracing::error!("the HTTP server stopped: {e}");
                    }
                });
                runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            })
            .map_err(HttpError::Runtime)?;
        tracing::info!(listen = %local_addr, "serving the dashboard, the API and /metrics");
        Ok(HttpServer {
            local_addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where it listens (the port chosen, with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving (open connections get 2 s) and waits for the thread.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}
