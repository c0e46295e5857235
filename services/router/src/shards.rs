//! Threads that serve the router's HTTP connections, each with a single-threaded runtime of its
//! own. A connection lives on one thread from accept to close, and so does every request on it
//! and the upstream connections it uses (their pools are kept per thread, see
//! [`switchyard_providers::own_pools`]): a request, its client connection and its upstream
//! connection wake one another with no hand-over between threads. Background work (the policy
//! and health watchers, leases, reports, gRPC) stays on the process's runtime.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// The serving threads. Dropping the last handle ends them, and anything still on them.
#[derive(Debug)]
pub struct Shards {
    runtimes: Vec<Handle>,
    next: AtomicUsize,
    end: CancellationToken,
}

impl Shards {
    /// Starts `threads` serving threads (at least one). When one cannot be started, those
    /// already running end.
    pub fn start(threads: usize) -> std::io::Result<Shards> {
        let mut shards = Shards {
            runtimes: Vec::new(),
            next: AtomicUsize::new(0),
            end: CancellationToken::new(),
        };
        for i in 0..threads.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let end = shards.end.clone();
            std::thread::Builder::new()
                .name(format!("switchyard-http-{i}"))
                .spawn(move || {
                    switchyard_providers::own_pools::keep_connections_on_this_thread();
                    runtime.block_on(end.cancelled());
                })?;
            shards.runtimes.push(handle);
        }
        Ok(shards)
    }

    /// Runs `work` on the next thread in turn.
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.runtimes.len();
        drop(self.runtimes[i].spawn(work));
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        self.end.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn work_goes_round_the_threads_and_each_thread_keeps_to_itself() {
        let shards = Shards::start(2).unwrap();
        let names = Arc::new(Mutex::new(Vec::new()));
        let (done, mut finished) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..4 {
            let (names, done) = (names.clone(), done.clone());
            shards.spawn(async move {
                // A task spawned from here stays on this thread.
                let here = std::thread::current().name().map(str::to_owned);
                let there =
                    tokio::spawn(async { std::thread::current().name().map(str::to_owned) })
                        .await
                        .unwrap();
                assert_eq!(here, there);
                names.lock().unwrap().push(here.unwrap());
                done.send(()).unwrap();
            });
        }
        for _ in 0..4 {
            finished.recv().await.unwrap();
        }
        let names = names.lock().unwrap().clone();
        let distinct: HashSet<_> = names.iter().collect();
        assert_eq!(distinct.len(), 2, "{names:?}");
        assert!(names.iter().all(|n| n.starts_with("switchyard-http-")));
    }

    #[tokio::test]
    async fn dropping_the_shards_ends_their_threads_work() {
        let shards = Shards::start(1).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        shards.spawn(async move {
            std::future::pending::<()>().await;
            drop(tx);
        });
        drop(shards);
        // The pending task is dropped with its runtime, and `tx` with it.
        assert!(
            tokio::time::timeout(std::time::Duration::from_secs(5), rx)
                .await
                .unwrap()
                .is_err()
        );
    }
}
