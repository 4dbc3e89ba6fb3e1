//! Wake-ups for the duroxide dispatchers. duroxide-pg has no long polling: every idle
//! dispatcher (4 orchestration and 16 activity workers) asks the database for work every poll
//! interval, which with a 20 ms interval is a thousand queries a second on an idle controller.
//! This store wraps the real one: a dispatcher that finds no work waits until this process
//! queues some (a started orchestration, a finished activity, a scheduled activity), until the
//! next timer it knows of is due (each due time wakes the one dispatcher that claimed it), or
//! at most `max_wait` (1 s in the controller), the safety net for work it cannot see coming
//! (a lock that expired after a crash, another process's queueing). Work is thus picked up as
//! soon as it exists instead of at the next poll, and an idle dispatcher asks the database
//! only a few times a second.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use duroxide::providers::{
    DispatcherCapabilityFilter, ExecutionMetadata, OrchestrationItem, Provider, ProviderAdmin,
    ProviderError, ScheduledActivityIdentifier, SessionFetchConfig, TagFilter, WorkItem,
};
use duroxide::Event;
use tokio::sync::futures::Notified;
use tokio::sync::Notify;

/// One queue's wake-ups: a notification for work queued now, and the times of work queued for
/// later (timers, delayed retries). An idle dispatcher *claims* the next due time it waits for,
/// so one dispatcher wakes for each, not all of them (with every idle dispatcher waking at every
/// timer, most of the CMS's fetches in a large fleet found nothing).
#[derive(Default)]
struct Wake {
    notify: Notify,
    /// A due time was added or handed back: idle dispatchers look again at what to wait for
    /// (in this process only: no query).
    reschedule: Notify,
    due_ms: Mutex<BinaryHeap<Reverse<u64>>>,
}

impl Wake {
    /// Work was queued, visible at `due_ms` (`None` or past: now). Work visible now wakes one
    /// waiting dispatcher (not all of them: a busy dispatcher fetches again anyway as soon as it
    /// is done); work for later is a due time for an idle dispatcher to claim.
    fn queued(&self, due_ms: Option<u64>) {
        match due_ms {
            Some(t) if t > now_ms() => {
                if let Ok(mut due) = self.due_ms.lock() {
                    due.push(Reverse(t));
                }
                self.reschedule.notify_waiters();
            }
            _ => self.notify.notify_one(),
        }
    }

    /// How long to wait after a fetch that began at `fetched_ms` found nothing, and the due
    /// time claimed for it: the next due time after the fetch (taken out, so no other
    /// dispatcher waits for it), or `cap` (nothing claimed) when there is none within `cap`.
    /// `held` (a time claimed before and not reached) goes back first. Due times up to
    /// `fetched_ms` were visible to that fetch and are dropped.
    fn claim(&self, fetched_ms: u64, cap: Duration, held: Option<u64>) -> (Duration, Option<u64>) {
        let Ok(mut due) = self.due_ms.lock() else {
            return (cap, None);
        };
        if let Some(t) = held {
            due.push(Reverse(t));
        }
        while due.peek().is_some_and(|Reverse(t)| *t <= fetched_ms) {
            due.pop();
        }
        let now = now_ms();
        match due.peek().map(|Reverse(t)| *t) {
            // One millisecond past it: the store compares with its own reading of the clock.
            Some(t) if Duration::from_millis(t.saturating_sub(now) + 1) <= cap => {
                due.pop();
                (Duration::from_millis(t.saturating_sub(now) + 1), Some(t))
            }
            _ => (cap, None),
        }
    }

    /// A claimed due time not waited for after all (the dispatcher found work first): back for
    /// another idle dispatcher.
    fn hand_back(&self, held: Option<u64>) {
        let Some(t) = held else { return };
        if let Ok(mut due) = self.due_ms.lock() {
            due.push(Reverse(t));
        }
        self.reschedule.notify_waiters();
    }
}

/// When work queued with `delay` becomes visible (`None`: now).
fn due_after(delay: Option<Duration>) -> Option<u64> {
    delay
        .filter(|d| !d.is_zero())
        .map(|d| now_ms().saturating_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
}

/// When an orchestration message becomes visible: a timer when it fires, anything else now.
fn fires_at(item: &WorkItem) -> Option<u64> {
    match item {
        WorkItem::TimerFired { fire_at_ms, .. } => Some(*fire_at_ms),
        _ => None,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// A duroxide store whose idle fetches wait for work instead of returning at once.
pub struct WakingStore {
    inner: Arc<dyn Provider>,
    orchestrations: Wake,
    activities: Wake,
    max_wait: Duration,
}

impl std::fmt::Debug for WakingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WakingStore")
            .field("inner", &self.inner.name())
            .field("max_wait", &self.max_wait)
            .finish_non_exhaustive()
    }
}

impl WakingStore {
    /// Wraps `inner`; an idle fetch returns empty after `max_wait` at most.
    pub fn new(inner: Arc<dyn Provider>, max_wait: Duration) -> Self {
        Self {
            inner,
            orchestrations: Wake::default(),
            activities: Wake::default(),
            max_wait,
        }
    }

    /// Fetches with `fetch` until it finds work, or `max_wait` has passed with none. `wake` is
    /// armed before each fetch, so work queued while the fetch runs is not missed.
    async fn fetch_waiting<T, F, Fut>(
        &self,
        wake: &Wake,
        mut fetch: F,
    ) -> Result<Option<T>, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>, ProviderError>>,
    {
        let deadline = tokio::time::Instant::now() + self.max_wait;
        loop {
            let notified: Notified<'_> = wake.notify.notified();
            let mut notified: Pin<Box<Notified<'_>>> = Box::pin(notified);
            notified.as_mut().enable();
            let fetched_ms = now_ms();
            // Work found is not passed on to another dispatcher: each queued message woke one
            // (or left a permit), and a dispatcher fetches again as soon as its work is done,
            // so a backlog is drained without empty fetches (one per found item, before).
            match fetch().await {
                Ok(None) => {}
                Ok(found) => return Ok(found),
                Err(e) => {
                    // This dispatcher now backs off (up to seconds): the wake-up it may have
                    // taken goes to another one.
                    wake.notify.notify_one();
                    return Err(e);
                }
            }
            // Wait for work queued now, the due time claimed, or the deadline; a new or
            // handed-back due time makes the wait be chosen again.
            let mut held = None;
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if left.is_zero() {
                    wake.hand_back(held);
                    return Ok(None);
                }
                let rescheduled = wake.reschedule.notified();
                let mut rescheduled = Box::pin(rescheduled);
                rescheduled.as_mut().enable();
                let wait;
                (wait, held) = wake.claim(fetched_ms, left, held.take());
                tokio::select! {
                    () = notified.as_mut() => {
                        wake.hand_back(held);
                        break;
                    }
                    () = rescheduled => {}
                    () = tokio::time::sleep(wait) => break,
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Provider for WakingStore {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn version(&self) -> &str {
        self.inner.version()
    }

    async fn fetch_orchestration_item(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
        filter: Option<&DispatcherCapabilityFilter>,
    ) -> Result<Option<(OrchestrationItem, String, u32)>, ProviderError> {
        self.fetch_waiting(&self.orchestrations, || {
            self.inner
                .fetch_orchestration_item(lock_timeout, poll_timeout, filter)
        })
        .await
    }

    async fn ack_orchestration_item(
        &self,
        lock_token: &str,
        execution_id: u64,
        history_delta: Vec<Event>,
        worker_items: Vec<WorkItem>,
        orchestrator_items: Vec<WorkItem>,
        metadata: ExecutionMetadata,
        cancelled_activities: Vec<ScheduledActivityIdentifier>,
    ) -> Result<(), ProviderError> {
        let activities = worker_items.len();
        let messages: Vec<Option<u64>> = orchestrator_items.iter().map(fires_at).collect();
        self.inner
            .ack_orchestration_item(
                lock_token,
                execution_id,
                history_delta,
                worker_items,
                orchestrator_items,
                metadata,
                cancelled_activities,
            )
            .await?;
        for _ in 0..activities {
            self.activities.queued(None);
        }
        for due in messages {
            self.orchestrations.queued(due);
        }
        // Messages that reached the instance while it was locked need no wake-up: duroxide's
        // dispatcher fetches again as soon as its turn is acknowledged.
        Ok(())
    }

    async fn abandon_orchestration_item(
        &self,
        lock_token: &str,
        delay: Option<Duration>,
        ignore_attempt: bool,
    ) -> Result<(), ProviderError> {
        self.inner
            .abandon_orchestration_item(lock_token, delay, ignore_attempt)
            .await?;
        self.orchestrations.queued(due_after(delay));
        Ok(())
    }

    async fn read(&self, instance: &str) -> Result<Vec<Event>, ProviderError> {
        self.inner.read(instance).await
    }

    async fn read_with_execution(
        &self,
        instance: &str,
        execution_id: u64,
    ) -> Result<Vec<Event>, ProviderError> {
        self.inner.read_with_execution(instance, execution_id).await
    }

    async fn append_with_execution(
        &self,
        instance: &str,
        execution_id: u64,
        new_events: Vec<Event>,
    ) -> Result<(), ProviderError> {
        self.inner
            .append_with_execution(instance, execution_id, new_events)
            .await
    }

    async fn enqueue_for_worker(&self, item: WorkItem) -> Result<(), ProviderError> {
        self.inner.enqueue_for_worker(item).await?;
        self.activities.queued(None);
        Ok(())
    }

    async fn fetch_work_item(
        &self,
        lock_timeout: Duration,
        poll_timeout: Duration,
        session: Option<&SessionFetchConfig>,
        tag_filter: &TagFilter,
    ) -> Result<Option<(WorkItem, String, u32)>, ProviderError> {
        self.fetch_waiting(&self.activities, || {
            self.inner
                .fetch_work_item(lock_timeout, poll_timeout, session, tag_filter)
        })
        .await
    }

    async fn ack_work_item(
        &self,
        token: &str,
        completion: Option<WorkItem>,
    ) -> Result<(), ProviderError> {
        let completes = completion.is_some();
        self.inner.ack_work_item(token, completion).await?;
        if completes {
            self.orchestrations.queued(None);
        }
        Ok(())
    }

    async fn renew_work_item_lock(
        &self,
        token: &str,
        extend_for: Duration,
    ) -> Result<(), ProviderError> {
        self.inner.renew_work_item_lock(token, extend_for).await
    }

    async fn renew_session_lock(
        &self,
        owner_ids: &[&str],
        extend_for: Duration,
        idle_timeout: Duration,
    ) -> Result<usize, ProviderError> {
        self.inner
            .renew_session_lock(owner_ids, extend_for, idle_timeout)
            .await
    }

    async fn cleanup_orphaned_sessions(
        &self,
        idle_timeout: Duration,
    ) -> Result<usize, ProviderError> {
        self.inner.cleanup_orphaned_sessions(idle_timeout).await
    }

    async fn abandon_work_item(
        &self,
        token: &str,
        delay: Option<Duration>,
        ignore_attempt: bool,
    ) -> Result<(), ProviderError> {
        self.inner
            .abandon_work_item(token, delay, ignore_attempt)
            .await?;
        self.activities.queued(due_after(delay));
        Ok(())
    }

    async fn renew_orchestration_item_lock(
        &self,
        token: &str,
        extend_for: Duration,
    ) -> Result<(), ProviderError> {
        self.inner
            .renew_orchestration_item_lock(token, extend_for)
            .await
    }

    async fn enqueue_for_orchestrator(
        &self,
        item: WorkItem,
        delay: Option<Duration>,
    ) -> Result<(), ProviderError> {
        let due = fires_at(&item).or_else(|| due_after(delay));
        self.inner.enqueue_for_orchestrator(item, delay).await?;
        self.orchestrations.queued(due);
        Ok(())
    }

    fn as_management_capability(&self) -> Option<&dyn ProviderAdmin> {
        self.inner.as_management_capability()
    }

    async fn get_custom_status(
        &self,
        instance: &str,
        last_seen_version: u64,
    ) -> Result<Option<(Option<String>, u64)>, ProviderError> {
        self.inner
            .get_custom_status(instance, last_seen_version)
            .await
    }

    async fn get_kv_value(
        &self,
        instance: &str,
        key: &str,
    ) -> Result<Option<String>, ProviderError> {
        self.inner.get_kv_value(instance, key).await
    }

    async fn get_kv_all_values(
        &self,
        instance: &str,
    ) -> Result<HashMap<String, String>, ProviderError> {
        self.inner.get_kv_all_values(instance).await
    }

    async fn get_instance_stats(
        &self,
        instance: &str,
    ) -> Result<Option<duroxide::SystemStats>, ProviderError> {
        self.inner.get_instance_stats(instance).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn an_idle_wait_claims_the_next_due_time_and_forgets_past_ones() {
        let wake = Wake::default();
        let cap = Duration::from_secs(60);
        assert_eq!(wake.claim(now_ms(), cap, None), (cap, None));
        // A due time the last fetch could already see is dropped: it waits the cap.
        let fetched = now_ms();
        wake.due_ms.lock().unwrap().push(Reverse(fetched - 5));
        wake.due_ms.lock().unwrap().push(Reverse(fetched));
        assert_eq!(wake.claim(fetched, cap, None), (cap, None));
        assert!(wake.due_ms.lock().unwrap().is_empty());
        // A later one bounds the wait and is claimed: a second waiter does not wait for it.
        wake.queued(Some(fetched + 30_000));
        let (wait, held) = wake.claim(fetched, cap, None);
        assert!(
            wait <= Duration::from_millis(30_001) && wait > Duration::from_secs(20),
            "{wait:?}"
        );
        assert_eq!(held, Some(fetched + 30_000));
        assert_eq!(wake.claim(fetched, cap, None), (cap, None));
        // Handed back (its waiter found work first), the next waiter claims it.
        wake.hand_back(held);
        assert_eq!(wake.claim(fetched, cap, None).1, held);
        // Held and claimed again when the wait is chosen anew; an earlier one comes first.
        wake.queued(Some(fetched + 10_000));
        assert_eq!(wake.claim(fetched, cap, held).1, Some(fetched + 10_000));
        assert_eq!(wake.due_ms.lock().unwrap().len(), 1);
        // Never longer than the cap, and nothing beyond it is claimed.
        let far = now_ms() + 120_000;
        wake.due_ms.lock().unwrap().clear();
        wake.queued(Some(far));
        assert_eq!(wake.claim(now_ms(), cap, None), (cap, None));
        assert_eq!(wake.due_ms.lock().unwrap().len(), 1);
    }

    #[test]
    fn work_due_now_wakes_a_fetch_and_work_due_later_does_not() {
        let wake = Wake::default();
        wake.queued(Some(now_ms() + 60_000));
        assert!(tokio_test_ready(&wake.notify).is_none());
        wake.queued(Some(now_ms().saturating_sub(1)));
        assert!(tokio_test_ready(&wake.notify).is_some());
        wake.queued(None);
        assert!(tokio_test_ready(&wake.notify).is_some());
    }

    /// Whether a permit is stored in `notify` (taking it).
    fn tokio_test_ready(notify: &Notify) -> Option<()> {
        use std::future::Future as _;
        let mut notified = Box::pin(notify.notified());
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        match notified.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(()) => Some(()),
            std::task::Poll::Pending => None,
        }
    }

    #[tokio::test]
    async fn a_waiter_armed_before_a_notification_is_woken_by_it() {
        let wake = Arc::new(Wake::default());
        let notified = wake.notify.notified();
        let mut notified = Box::pin(notified);
        notified.as_mut().enable();
        // Notified after arming and before waiting: the wake-up is not lost.
        wake.queued(None);
        tokio::time::timeout(Duration::from_secs(30), notified)
            .await
            .expect("the armed waiter missed the notification");
    }
}
