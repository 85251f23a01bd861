//! The alert webhook: a release that paused itself is announced with a POST
//! of `{"text": ...}` (what chat webhooks take) to `[alerts] webhook_url`,
//! in its own task, with a deadline per attempt and three attempts, so it
//! never holds up anything else.

use crate::config::AlertsSettings;
use std::time::Duration;

const ATTEMPTS: u32 = 3;

pub struct Alerts {
    url: Option<String>,
    client: reqwest::Client,
}

impl Alerts {
    pub fn from_settings(s: &AlertsSettings) -> Self {
        let timeout = Duration::from_secs(s.webhook_timeout_secs.max(1));
        Alerts {
            url: (!s.webhook_url.is_empty()).then(|| s.webhook_url.clone()),
            client: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .build()
                .unwrap_or_default(),
        }
    }

    /// Posts `text` in the background; failures are logged, not returned.
    pub fn send(&self, text: String) {
        let Some(url) = self.url.clone() else {
            return;
        };
        let client = self.client.clone();
        tokio::spawn(async move {
            let body = serde_json::json!({ "text": text });
            for attempt in 1..=ATTEMPTS {
                match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status().is_success() => return,
                    Ok(r) => tracing::warn!(
                        status = r.status().as_u16(),
                        attempt,
                        "alert webhook refused the alert"
                    ),
                    Err(e) => tracing::warn!(error = %e, attempt, "alert webhook unreachable"),
                }
                tokio::time::sleep(Duration::from_secs(u64::from(attempt) * 2)).await;
            }
            tracing::error!("alert webhook failed {ATTEMPTS} times; the alert is only in the log and the audit log");
        });
    }
}
