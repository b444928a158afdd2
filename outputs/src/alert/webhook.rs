//! The `webhook` dispatcher: POST the envelope as JSON.

use async_trait::async_trait;

use super::{DispatchConfigError, DispatchError, Dispatched, Dispatcher, HttpOptions};
use crate::schema::{self, Envelope, PayloadFormat, WEBHOOK_ID_HEADER};

/// POSTs every event, as its JSON envelope, to one URL; any 2xx answer is
/// success. The request also carries the envelope id in the
/// [`WEBHOOK_ID_HEADER`] (`webhook-id`) so a receiver can de-duplicate
/// redeliveries.
#[derive(Debug)]
pub struct WebhookDispatcher {
    name: String,
    url: reqwest::Url,
    shown: String,
    client: reqwest::Client,
}

impl WebhookDispatcher {
    /// A dispatcher posting to `url` (`http://` or `https://`).
    pub fn new(url: &str, http: &HttpOptions) -> Result<Self, DispatchConfigError> {
        let url = super::check_url(url)?;
        let shown = super::redact_url(url.as_str());
        Ok(WebhookDispatcher {
            name: format!("webhook={shown}"),
            url,
            shown,
            client: super::http_client(http)?,
        })
    }
}

#[async_trait]
impl Dispatcher for WebhookDispatcher {
    fn name(&self) -> &str {
        &self.name
    }

    async fn dispatch(&self, event: &Envelope) -> Result<Dispatched, DispatchError> {
        let body = schema::encode(event, PayloadFormat::Json)?;
        super::post(
            &self.client,
            (&self.url, &self.shown),
            PayloadFormat::Json.content_type(),
            &[(WEBHOOK_ID_HEADER, event.id.as_str())],
            body,
            super::Refusals::Retried,
        )
        .await?;
        Ok(Dispatched::Delivered)
    }
}
