//! Asymmetric (`v1a`) signatures, end to end: a destination given an ed25519 key through the
//! admin API shows only its public key, and every attempt's `webhook-signature` verifies
//! with that key in `ring` (an implementation independent of the one that signs; the
//! Standard Webhooks reference libraries verify only `v1`), through a rotation that signs
//! with both keys.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use hookflow_core::DeliveryOutcome;
use hookflow_e2e::{admin::AdminApi, eventually, receiver::Received, scenario::Scenario, temporal};
use ring::signature::{ED25519, UnparsedPublicKey};
use serde_json::json;

/// A fresh `whsk_` key: a random 32-byte seed.
fn ed25519_key() -> String {
    let seed = [
        uuid::Uuid::new_v4().into_bytes(),
        uuid::Uuid::new_v4().into_bytes(),
    ]
    .concat();
    format!("whsk_{}", BASE64.encode(seed))
}

/// The `v1a` signatures of `request` that `public_key` (`whpk_…`) verifies, out of all.
fn verified_by(request: &Received, public_key: &str) -> (usize, usize) {
    let key = BASE64
        .decode(public_key.strip_prefix("whpk_").expect("whpk_ prefix"))
        .expect("base64 key");
    let key = UnparsedPublicKey::new(&ED25519, key);
    let mut signed = format!(
        "{}.{}.",
        request.header("webhook-id"),
        request.header("webhook-timestamp")
    )
    .into_bytes();
    signed.extend_from_slice(&request.body);
    let signatures: Vec<&str> = request.header("webhook-signature").split(' ').collect();
    let verified = signatures
        .iter()
        .filter_map(|s| s.strip_prefix("v1a,"))
        .filter(|s| {
            let signature = BASE64.decode(s).expect("base64 signature");
            key.verify(&signed, &signature).is_ok()
        })
        .count();
    (verified, signatures.len())
}

#[tokio::test(flavor = "multi_thread")]
async fn v1a_signatures_verify_with_the_shown_public_key_through_a_rotation() {
    let mut s = Scenario::new().await;
    let (base, token) = s.deployment.admin_api();
    let api = AdminApi::new(base, token);
    let process = s.deployment.start();
    let collection = format!("/v1/teams/{}/destinations", s.team);
    let one = format!("{collection}/signed");
    api.wait_until_serving(&collection).await;

    let (status, refused) = api
        .call(
            "POST",
            &collection,
            Some(json!({"id": "signed", "url": s.receiver.url("signed"), "secret": "whsk_AAAA"})),
        )
        .await;
    assert_eq!(
        (status, &refused["field"]),
        (400, &json!("secret")),
        "{refused}"
    );

    let (old, new) = (ed25519_key(), ed25519_key());
    let spec = json!({"id": "signed", "url": s.receiver.url("signed"), "secret": old});
    let (status, created) = api.call("POST", &collection, Some(spec)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["secret"], "<redacted>");
    let old_public = created["public_key"]
        .as_str()
        .expect("public_key")
        .to_owned();
    assert!(old_public.starts_with("whpk_"), "{created}");
    assert!(created.get("previous_public_key").is_none(), "{created}");

    let first = s.produce_events(1).await[0];
    let result = temporal::result(&s.temporal, &format!("signed:{first}")).await;
    assert_eq!(result.outcome, DeliveryOutcome::Delivered);
    let received = s.receiver.received_on("signed");
    assert_eq!(received.len(), 1);
    assert_eq!(verified_by(&received[0], &old_public), (1, 1));

    // Rotation: the body read back, with the new key and the old one as the previous.
    let (_, mut shown) = api.call("GET", &one, None).await;
    shown["secret"] = json!(new);
    shown["previous_secret"] = json!(old);
    let (status, rotated) = api.call("PUT", &one, Some(shown)).await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(rotated["previous_public_key"], old_public.as_str());
    let new_public = rotated["public_key"]
        .as_str()
        .expect("public_key")
        .to_owned();
    assert_ne!(new_public, old_public);
    process
        .wait_for_metric(
            r#"hookflow_destination_changes_total{result="applied"}"#,
            2.0,
            Duration::from_secs(10),
        )
        .await;

    let second = s.produce_events(1).await[0];
    let result = temporal::result(&s.temporal, &format!("signed:{second}")).await;
    assert_eq!(result.outcome, DeliveryOutcome::Delivered);
    let received = eventually(Duration::from_secs(10), "the second request", || async {
        let received = s.receiver.received_on("signed");
        (received.len() == 2).then_some(received)
    })
    .await;
    let during = &received[1];
    assert!(
        during.header("webhook-signature").starts_with("v1a,"),
        "{}",
        during.header("webhook-signature")
    );
    assert_eq!(verified_by(during, &new_public), (1, 2));
    assert_eq!(verified_by(during, &old_public), (1, 2));
    // The first request's signature does not verify with the new key.
    assert_eq!(verified_by(&received[0], &new_public), (0, 1));
}
