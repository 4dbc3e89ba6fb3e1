//! Waiting for something to become true: one helper for every "try, sleep, try again until a
//! deadline" loop in the agents. No crate does this for async code without also bringing retry
//! policies we do not want (back-off, jitter): the loops here poll a local fact at a fixed pace.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// What one look found.
#[derive(Debug)]
pub enum Attempt<T, E> {
    /// It happened: stop with this value.
    Done(T),
    /// Not yet, and why (kept for the timeout's message).
    NotYet(String),
    /// It can no longer happen: stop with this error at once.
    GiveUp(E),
}

/// Why [`poll`] stopped without a value.
#[derive(Debug, thiserror::Error)]
pub enum PollError<E> {
    #[error(transparent)]
    TimedOut(#[from] TimedOut),
    #[error(transparent)]
    GaveUp(E),
}

/// The deadline passed before the awaited thing happened.
#[derive(Debug, thiserror::Error)]
#[error("{what} did not happen within {after:?}{}", last.as_deref().map(|l| format!(": {l}")).unwrap_or_default())]
pub struct TimedOut {
    /// What was awaited (`"postgres accepts connections"`).
    pub what: String,
    pub after: Duration,
    /// The last [`Attempt::NotYet`] reason.
    pub last: Option<String>,
}

/// Runs `attempt` every `interval` until it is [`Attempt::Done`] or [`Attempt::GiveUp`], or until
/// `timeout` has passed since the first attempt. The first attempt runs at once, and one attempt
/// always runs after the deadline is reached, so a zero timeout still looks once.
pub async fn poll<T, E, F, Fut>(
    what: &str,
    interval: Duration,
    timeout: Duration,
    mut attempt: F,
) -> Result<T, PollError<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt<T, E>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match attempt().await {
            Attempt::Done(value) => return Ok(value),
            Attempt::GiveUp(e) => return Err(PollError::GaveUp(e)),
            Attempt::NotYet(why) => why,
        };
        if Instant::now() >= deadline {
            return Err(PollError::TimedOut(TimedOut {
                what: what.to_string(),
                after: timeout,
                last: Some(last),
            }));
        }
        tokio::time::sleep(interval).await;
    }
}

/// [`poll`] for a check that either has its value or does not yet.
pub async fn poll_until<T, F, Fut>(
    what: &str,
    interval: Duration,
    timeout: Duration,
    mut check: F,
) -> Result<T, TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let result = poll::<T, std::convert::Infallible, _, _>(what, interval, timeout, || {
        let next = check();
        async move {
            match next.await {
                Some(value) => Attempt::Done(value),
                None => Attempt::NotYet("not yet".into()),
            }
        }
    })
    .await;
    match result {
        Ok(value) => Ok(value),
        Err(PollError::TimedOut(mut t)) => {
            t.last = None;
            Err(t)
        }
        Err(PollError::GaveUp(never)) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn returns_the_value_once_the_check_holds() {
        let n = AtomicU32::new(0);
        let got = poll_until(
            "three looks",
            Duration::from_millis(10),
            Duration::from_secs(1),
            || {
                let seen = n.fetch_add(1, Ordering::Relaxed) + 1;
                async move { (seen == 3).then_some(seen) }
            },
        )
        .await
        .unwrap();
        assert_eq!(got, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn times_out_with_the_last_reason_and_gives_up_at_once() {
        let err = poll::<(), String, _, _>(
            "the server starts",
            Duration::from_millis(10),
            Duration::from_millis(50),
            || async { Attempt::NotYet("connection refused".into()) },
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the server starts did not happen within 50ms: connection refused"
        );
        let looks = AtomicU32::new(0);
        let err = poll::<(), String, _, _>(
            "x",
            Duration::from_millis(10),
            Duration::from_secs(9),
            || {
                looks.fetch_add(1, Ordering::Relaxed);
                async { Attempt::GiveUp("it died".into()) }
            },
        )
        .await
        .unwrap_err();
        assert!(matches!(err, PollError::GaveUp(ref e) if e == "it died"));
        assert_eq!(looks.load(Ordering::Relaxed), 1);
        let err =
            poll_until::<(), _, _>("y", Duration::from_millis(10), Duration::ZERO, || async {
                None
            })
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "y did not happen within 0ns");
    }
}
