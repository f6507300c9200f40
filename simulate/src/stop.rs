//! [`Stop`]: when a run ends early.
//!
//! - A signal (Ctrl-C, wired up by `run`) stops the run at once: the pace
//!   generates nothing more and a sink abandons the batch in hand, even
//!   mid-request.
//! - The deadline (`--duration`) stops new batches from that instant, and a
//!   sink gives up a batch it would otherwise retry; a request already in
//!   flight is still allowed to finish.

use tokio::sync::watch;
use tokio::time::Instant;

/// The stop signal and the deadline of one run.
#[derive(Debug, Clone)]
pub struct Stop {
    signal: watch::Receiver<bool>,
    deadline: Option<Instant>,
}

impl Stop {
    /// Stops when `signal` becomes `true`, or at `deadline`.
    pub fn new(signal: watch::Receiver<bool>, deadline: Option<Instant>) -> Self {
        Stop { signal, deadline }
    }

    /// Resolves once a stop was signalled; never if no one can signal one.
    pub async fn signalled(&self) {
        // A clone sees the current value first, so a signal sent earlier counts.
        let mut signal = self.signal.clone();
        if signal.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Resolves at the deadline; never without one.
    pub async fn deadline(&self) {
        match self.deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending::<()>().await,
        }
    }

    /// The deadline has passed.
    pub fn past_deadline(&self) -> bool {
        self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}
