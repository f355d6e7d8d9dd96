//! CrashLoopBackOff, as the kubelet times it: a container that exits is restarted at
//! once the first time, then waits 10 s after its exit, doubling on each further exit
//! up to 5 minutes. A container that ran for 10 minutes before exiting starts over.

use std::time::Duration;
use tokio::time::Instant;

pub const INITIAL: Duration = Duration::from_secs(10);
pub const MAX: Duration = Duration::from_secs(300);
/// A run this long resets the backoff.
pub const RESET_AFTER: Duration = Duration::from_secs(600);

#[derive(Clone, Debug, Default)]
pub struct Backoff {
    /// The wait after the most recent exit; `None` until the first restart.
    delay: Option<Duration>,
}

impl Backoff {
    /// Called when a restart is due for a container that exited at `exited` after
    /// running `ran_for`. `None`: start it now (and the next wait grows); `Some(wait)`:
    /// still backing off for `wait`.
    pub fn check(&mut self, exited: Instant, ran_for: Duration, now: Instant) -> Option<Duration> {
        if ran_for >= RESET_AFTER {
            self.delay = None;
        }
        match self.delay {
            Some(delay) if now < exited + delay => Some(exited + delay - now),
            Some(delay) => {
                self.delay = Some((delay * 2).min(MAX));
                None
            }
            None => {
                self.delay = Some(INITIAL);
                None
            }
        }
    }

    /// The wait currently applied (for the `back-off 20s restarting ...` message).
    pub fn current(&self) -> Duration {
        self.delay.unwrap_or(Duration::ZERO)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn restarts_back_off_doubling_to_five_minutes_and_reset_after_a_long_run() {
        let mut backoff = Backoff::default();
        let short = Duration::from_secs(1);
        let t0 = Instant::now();
        assert_eq!(backoff.check(t0, short, t0), None, "the first restart is immediate");
        let mut waits = Vec::new();
        let mut exited = t0;
        for _ in 0..7 {
            let wait = backoff.check(exited, short, exited).expect("backing off");
            waits.push(wait.as_secs());
            tokio::time::advance(wait).await;
            assert_eq!(backoff.check(exited, short, Instant::now()), None, "due once the wait is over");
            exited = Instant::now();
        }
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff.check(exited, RESET_AFTER, exited), None, "a 10-minute run resets it");
        assert_eq!(backoff.check(exited, short, exited), Some(INITIAL));
    }
}
