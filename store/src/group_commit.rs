//! Group commit: many writers, few fsyncs.
//!
//! Each writer first applies its write in memory (a sled transaction), then
//! takes a *ticket* and waits until a flush that started after its write
//! has finished. The first waiter that finds no flush running becomes the
//! leader: it notes the newest ticket, flushes, and wakes everyone whose
//! ticket is covered. Writers that arrive during a flush wait for the next
//! one, which then covers all of them at once. There is no extra thread.

use std::sync::{Condvar, Mutex, MutexGuard};

/// Shares flushes between concurrent writers.
#[derive(Debug, Default)]
pub struct GroupCommit {
    state: Mutex<CommitState>,
    flushed: Condvar,
}

#[derive(Debug, Default)]
struct CommitState {
    /// Tickets handed out: writes applied in memory.
    written: u64,
    /// Every write with a ticket up to this one is on disk.
    durable: u64,
    /// A leader is flushing right now.
    flushing: bool,
    /// How many flushes ran (for benchmarks and tests).
    flush_count: u64,
}

impl GroupCommit {
    /// Records that a write has been applied in memory, returning its ticket.
    pub fn ticket(&self) -> u64 {
        let mut state = self.lock();
        state.written += 1;
        state.written
    }

    /// Blocks until the write with `ticket` is durable, flushing if no one
    /// else is. `flush` must make every write applied before it was called
    /// durable.
    pub fn wait_durable<E>(&self, ticket: u64, flush: impl Fn() -> Result<(), E>) -> Result<(), E> {
        let mut state = self.lock();
        assert!(ticket <= state.written, "ticket {ticket} was never handed out");
        loop {
            if state.durable >= ticket {
                return Ok(());
            }
            if state.flushing {
                state = self.flushed.wait(state).expect("group commit lock poisoned");
                continue;
            }
            state.flushing = true;
            let target = state.written;
            drop(state);
            let result = flush();
            state = self.lock();
            state.flushing = false;
            state.flush_count += 1;
            if result.is_ok() {
                assert!(target >= state.durable, "durable never moves backwards");
                state.durable = target;
            }
            self.flushed.notify_all();
            result?;
        }
    }

    /// How many flushes have run so far.
    pub fn flush_count(&self) -> u64 {
        self.lock().flush_count
    }

    fn lock(&self) -> MutexGuard<'_, CommitState> {
        self.state.lock().expect("group commit lock poisoned")
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    #[test]
    fn concurrent_writers_share_flushes_and_all_become_durable() {
        // Goal: 8 threads x 200 writes finish with far fewer flushes than writes,
        // and no writer returns before a flush that started after its write.
        let commit = Arc::new(GroupCommit::default());
        let applied = Arc::new(AtomicU64::new(0));
        let flushed_upto = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (commit, applied, flushed_upto) = (commit.clone(), applied.clone(), flushed_upto.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let mine = applied.fetch_add(1, Ordering::SeqCst) + 1;
                        let ticket = commit.ticket();
                        commit
                            .wait_durable(ticket, || {
                                std::thread::sleep(std::time::Duration::from_micros(200));
                                flushed_upto.fetch_max(applied.load(Ordering::SeqCst), Ordering::SeqCst);
                                Ok::<(), ()>(())
                            })
                            .expect("flush never fails here");
                        assert!(flushed_upto.load(Ordering::SeqCst) >= mine, "returned before durable");
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("writer thread");
        }
        let flushes = commit.flush_count();
        assert!(flushes < 1600, "{flushes} flushes for 1600 writes: no sharing");
        assert!(flushes > 0);
    }

    #[test]
    fn a_failed_flush_is_reported_and_the_next_writer_retries() {
        let commit = GroupCommit::default();
        let ticket = commit.ticket();
        let err = commit.wait_durable(ticket, || Err("disk full")).expect_err("flush failed");
        assert_eq!(err, "disk full");
        commit.wait_durable(ticket, || Ok::<(), &str>(())).expect("second flush works");
        assert_eq!(commit.flush_count(), 2);
    }
}
