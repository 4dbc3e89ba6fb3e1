//! The events log in the CMS (the health-check history is in [`super::health`]).

use toygres_common::controller_api::Event;
use toygres_common::domain::EventKind;

use super::{get, rfc3339, Cms, CmsError};

/// `text` without the detail Postgres adds to an error (`DETAIL: Failing row contains …` can
/// hold a row's values; `HINT:`): what an operation's error or an event may say to API clients.
pub fn without_sql_detail(text: &str) -> String {
    let end = ["\nDETAIL:", "\nHINT:", "\nWHERE:"]
        .iter()
        .filter_map(|marker| text.find(marker))
        .min()
        .unwrap_or(text.len());
    text[..end].to_string()
}

impl Cms {
    /// Appends an event to an instance's log.
    pub async fn record_event(
        &self,
        instance: &str,
        member: Option<&str>,
        operation_id: Option<&str>,
        kind: EventKind,
        message: &str,
    ) -> Result<(), CmsError> {
        let kind = kind.name();
        let message = without_sql_detail(message);
        self.execute(
            "record an event",
            "INSERT INTO toygres.events (instance, member, operation_id, kind, message)
             VALUES ($1, $2, $3, $4, $5)",
            &[&instance, &member, &operation_id, &kind, &message],
        )
        .await?;
        Ok(())
    }

    /// An instance's newest events, oldest first.
    pub async fn list_events(&self, instance: &str, limit: i64) -> Result<Vec<Event>, CmsError> {
        self.list_events_page(instance, limit, None).await
    }

    /// A page of an instance's events, oldest first: the newest `limit`, or with `since` the
    /// first `limit` after the event `since`.
    pub async fn list_events_page(
        &self,
        instance: &str,
        limit: i64,
        since: Option<i64>,
    ) -> Result<Vec<Event>, CmsError> {
        let what = "list an instance's events";
        let sql = concat!(
            "SELECT id, ",
            rfc3339!("at"),
            ", kind, member, operation_id, message FROM (
                SELECT * FROM toygres.events WHERE instance = $1 AND id > coalesce($3::bigint, -1)
                 ORDER BY CASE WHEN $3::bigint IS NULL THEN -id ELSE id END LIMIT $2
             ) page ORDER BY id"
        );
        let rows = self.query(what, sql, &[&instance, &limit, &since]).await?;
        rows.iter()
            .map(|row| {
                Ok(Event {
                    id: get(row, 0, what)?,
                    at: get(row, 1, what)?,
                    kind: get(row, 2, what)?,
                    member: get(row, 3, what)?,
                    operation_id: get(row, 4, what)?,
                    message: get(row, 5, what)?,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_lose_the_rows_postgres_quotes() {
        let raw = "record replicas: db error: ERROR: new row for relation \"instances\" violates \
                   check constraint \"instances_replicas_check\"\nDETAIL: Failing row contains \
                   (side, 6, secret).";
        let clean = without_sql_detail(raw);
        assert!(clean.ends_with("\"instances_replicas_check\""), "{clean}");
        assert!(!clean.contains("Failing row"));
        assert_eq!(without_sql_detail("plain"), "plain");
        assert_eq!(without_sql_detail("a\nHINT: b\nDETAIL: c"), "a");
    }
}
