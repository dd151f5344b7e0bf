//! The HTTP request of one delivery attempt, minus the transport: the body in the
//! destination's format, the destination's own headers, and the Standard Webhooks headers
//! (`webhook-id`, `webhook-timestamp`, `webhook-signature` with one signature per secret).
//! The attempt activity and the admin API's test send both build requests here.

use crate::{
    body::{BodyContext, render_body},
    delivery::DeliveryInput,
    destination::Destination,
    signing::{SigningError, signature_header},
};

/// Headers and body, ready to send. Its `Debug` names the headers, never their values.
pub struct PreparedRequest {
    /// Every header, the destination's first (hookflow's own cannot be overridden:
    /// validation refuses them, and later ones win).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl std::fmt::Debug for PreparedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("PreparedRequest")
            .field("headers", &names)
            .field("body_bytes", &self.body.len())
            .finish()
    }
}

/// The request delivering `delivery` to `destination` at `timestamp` (seconds).
pub fn prepare(
    destination: &Destination,
    delivery: &DeliveryInput,
    site_url: &str,
    timestamp: i64,
) -> Result<PreparedRequest, SigningError> {
    // A notice only to a notices destination: an event cannot pass for one elsewhere and
    // skip its destination's format.
    let body = if destination.notices && crate::notice::is_notice(delivery) {
        crate::notice::notice_body(delivery)
    } else {
        render_body(
            delivery,
            &BodyContext {
                format: destination.format,
                template: destination.template.as_deref(),
                url: destination.url.as_str(),
                site_url,
            },
        )
    };
    let webhook_id = delivery.delivery_id.as_str();
    let mut headers: Vec<(String, String)> = destination.headers.expose().to_vec();
    headers.push(("webhook-id".into(), webhook_id.to_owned()));
    headers.push(("webhook-timestamp".into(), timestamp.to_string()));
    if !destination.secrets.is_empty() {
        let signature = signature_header(&destination.secrets, webhook_id, timestamp, &body)?;
        headers.push(("webhook-signature".into(), signature));
    }
    Ok(PreparedRequest { headers, body })
}
