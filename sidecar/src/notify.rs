//! Reports to the controller (`--notify-url`): one authenticated POST per report, with a short
//! deadline, so the controller's actor checks the instance at once instead of at its next round.
//! Best effort: a report that fails is logged and dropped (the controller's own rounds still
//! find the change). What triggers reports and what an answer leads to is
//! [`crate::postgres::report`].

use std::time::Duration;

use anyhow::{bail, Context as _};
use toygres_common::member_report::{report_token, MemberReport, ReportAnswer};

/// How long one report may take, connection included.
const REPORT_TIMEOUT: Duration = Duration::from_secs(1);

/// Sends this member's reports. `Debug` never shows the token.
#[derive(Clone)]
pub struct Notifier {
    url: String,
    token: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// Reports of `member` (of `instance`) to the controller at `base_url`, authenticated with
    /// the report token derived from `api_token`. An `https://` URL needs the CA the
    /// controller's certificate comes from (`ca_pem`): the token goes to nobody else.
    pub fn new(
        base_url: &str,
        instance: &str,
        member: &str,
        api_token: &str,
        ca_pem: Option<&[u8]>,
    ) -> anyhow::Result<Self> {
        let base = base_url.trim_end_matches('/');
        let valid = (base.starts_with("http://") || base.starts_with("https://"))
            && base.len() > "https://".len()
            && !base.contains(|c: char| c.is_whitespace() || c == '?' || c == '#');
        if !valid {
            bail!("{base_url:?} is not an http(s) URL (http://HOST:PORT)");
        }
        let builder = reqwest::Client::builder()
            .timeout(REPORT_TIMEOUT)
            .connect_timeout(REPORT_TIMEOUT);
        let client = match (base.starts_with("https://"), ca_pem) {
            (false, _) => builder.build()?,
            (true, None) => bail!("an https:// notify URL needs the controller's CA"),
            (true, Some(ca)) => toygres_common::tls::https::client_trusting(builder, ca, base)
                .context("trust the controller's CA")?,
        };
        Ok(Self {
            url: format!("{base}/v1/instances/{instance}/members/{member}/report"),
            token: report_token(api_token, member),
            client,
        })
    }

    /// The controller's API these reports go to.
    pub fn base_url(&self) -> &str {
        self.url.split("/v1/instances/").next().unwrap_or(&self.url)
    }

    /// Sends one report and reads the answer.
    pub async fn send(&self, report: &MemberReport) -> Result<ReportAnswer, String> {
        let response = self
            .client
            .post(&self.url)
            .bearer_auth(&self.token)
            .json(report)
            .send()
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let body: String = body.chars().take(200).collect();
            return Err(format!("the controller answered {status}: {body}"));
        }
        response
            .json::<ReportAnswer>()
            .await
            .map_err(|e| format!("read the answer: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_urls_are_taken_and_the_token_never_shows() {
        let n = Notifier::new(
            "http://127.0.0.1:7700/",
            "db",
            "db-0",
            "0123456789abcdef",
            None,
        )
        .unwrap();
        assert_eq!(
            n.url,
            "http://127.0.0.1:7700/v1/instances/db/members/db-0/report"
        );
        assert!(!format!("{n:?}").contains(&n.token));
        for bad in [
            "",
            "127.0.0.1:7700",
            "ftp://x",
            "http://",
            "http://a b",
            "http://x?y",
            "https://127.0.0.1:7700",
        ] {
            assert!(
                Notifier::new(bad, "db", "db-0", "0123456789abcdef", None).is_err(),
                "{bad:?}"
            );
        }
    }
}
