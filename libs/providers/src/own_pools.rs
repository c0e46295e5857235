//! Connection pools kept per thread. A server thread that runs a single-threaded runtime of its
//! own calls [`keep_connections_on_this_thread`]; from then on the upstream connections its
//! requests use are opened, driven and pooled on that thread, so a request and its upstream
//! connection wake each other without crossing threads (no futex, no context switch). Other
//! threads (a multi-threaded runtime's workers) share the client's one pool.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::ResponseFuture;

use crate::client::HttpClient;

thread_local! {
    /// This thread keeps its own pools.
    static OWN: Cell<bool> = const { Cell::new(false) };
    /// This thread's pools, by the id of the [`PoolMaker`] that built them.
    static POOLS: RefCell<Vec<(u64, HttpClient)>> = const { RefCell::new(Vec::new()) };
}

/// From now on this thread opens and pools its own upstream connections. For threads that
/// each run a single-threaded runtime; the pools live as long as the thread.
pub fn keep_connections_on_this_thread() {
    OWN.set(true);
}

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// Builds pools with one client's settings, and finds the calling thread's.
#[derive(Clone)]
pub(crate) struct PoolMaker {
    id: u64,
    build: Arc<dyn Fn() -> HttpClient + Send + Sync>,
}

impl PoolMaker {
    pub(crate) fn new(build: impl Fn() -> HttpClient + Send + Sync + 'static) -> Self {
        PoolMaker {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            build: Arc::new(build),
        }
    }

    /// A new pool.
    pub(crate) fn make(&self) -> HttpClient {
        (self.build)()
    }

    /// Sends `req` on this thread's own pool when it keeps one, else on `shared`.
    pub(crate) fn request(
        &self,
        shared: &HttpClient,
        req: http::Request<Full<Bytes>>,
    ) -> ResponseFuture {
        if !OWN.get() {
            return shared.request(req);
        }
        POOLS.with_borrow_mut(|pools| {
            if let Some((_, own)) = pools.iter().find(|(id, _)| *id == self.id) {
                return own.request(req);
            }
            let own = self.make();
            let sent = own.request(req);
            pools.push((self.id, own));
            sent
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn counting() -> (PoolMaker, Arc<AtomicUsize>) {
        let built = Arc::new(AtomicUsize::new(0));
        let b = built.clone();
        // A client's own settings, counted.
        let inner = crate::ProviderClient::new(Default::default())
            .expect("client")
            .pools;
        let maker = PoolMaker::new(move || {
            b.fetch_add(1, Ordering::Relaxed);
            inner.make()
        });
        (maker, built)
    }

    fn request() -> http::Request<Full<Bytes>> {
        // Nothing listens on port 9 of loopback; the future is dropped unpolled anyway.
        http::Request::get("http://127.0.0.1:9/")
            .body(Full::default())
            .unwrap()
    }

    #[tokio::test]
    async fn a_thread_that_keeps_its_own_pools_builds_one_per_client_once() {
        let (maker, built) = counting();
        let shared = maker.make();
        assert_eq!(built.load(Ordering::Relaxed), 1);
        // Not (yet) keeping its own: the shared pool.
        drop(maker.request(&shared, request()));
        assert_eq!(built.load(Ordering::Relaxed), 1);
        let m = maker.clone();
        let b = built.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                keep_connections_on_this_thread();
                drop(m.request(&shared, request()));
                drop(m.request(&shared, request()));
                assert_eq!(b.load(Ordering::Relaxed), 2, "one pool for this thread");
                let (other, other_built) = counting();
                drop(other.request(&shared, request()));
                assert_eq!(other_built.load(Ordering::Relaxed), 1, "and one per client");
            });
        })
        .join()
        .unwrap();
    }
}
