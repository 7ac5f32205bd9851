//! Redis writes whose loss is harmless, sent off the answer's path and many
//! per round trip: the journal entry of a row that is stored (a lost removal
//! is found by the reconciler, which sees the row and removes it) and the
//! claim of a request that has its answer (a lost release lapses with the
//! claim's TTL; a retry meanwhile finds the stored answer). Each was one
//! awaited or spawned Redis call per request; under load they now share one
//! pipeline per batch.

use crate::cache::Redis;
use std::sync::OnceLock;
use tokio::sync::mpsc;

/// Queued writes beyond this are dropped (and left to the cleanups above)
/// rather than held: the queue is bounded like every other.
const QUEUE: usize = 16_384;
const BATCH: usize = 1024;

pub struct Deferred {
    conn: Redis,
    // Started on first use, inside the caller's runtime (constructors are sync).
    tx: OnceLock<mpsc::Sender<redis::Cmd>>,
}

impl Deferred {
    pub fn new(conn: Redis) -> Self {
        Deferred {
            conn,
            tx: OnceLock::new(),
        }
    }

    pub fn send(&self, cmd: redis::Cmd) {
        let tx = self.tx.get_or_init(|| start(self.conn.clone()));
        if tx.try_send(cmd).is_err() {
            tracing::debug!("deferred redis write dropped (queue full)");
        }
    }
}

fn start(mut conn: Redis) -> mpsc::Sender<redis::Cmd> {
    let (tx, mut rx) = mpsc::channel::<redis::Cmd>(QUEUE);
    tokio::spawn(async move {
        let mut cmds = Vec::with_capacity(BATCH);
        while rx.recv_many(&mut cmds, BATCH).await > 0 {
            let mut pipe = redis::pipe();
            for cmd in cmds.drain(..) {
                pipe.add_command(cmd).ignore();
            }
            if let Err(e) = pipe.query_async::<()>(&mut conn).await {
                tracing::warn!(error = %e, "deferred redis writes failed, left to their cleanups");
            }
        }
    });
    tx
}
