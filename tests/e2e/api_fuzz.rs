//! The admin API under hostile input: schemathesis generates requests from
//! docs/openapi.yaml (valid and invalid, bounded in number) against the real binary and
//! checks every answer: no 5xx, nothing the spec does not describe, no crash.

use std::{path::Path, process::Command};

use hookflow_e2e::{admin::AdminApi, scenario::Scenario};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_api_keeps_to_its_spec_under_generated_requests() {
    let mut s = Scenario::new().await;
    let (base, token) = s.deployment.admin_api();
    let api = AdminApi::new(base.clone(), token.clone());
    let process = s.deployment.start();
    let collection = format!("/v1/teams/{}/destinations", s.team);
    api.wait_until_serving(&collection).await;
    // Something for reads to find.
    let spec = json!({"id": "fuzzed", "url": s.receiver.url("fuzzed")});
    assert_eq!(api.call("POST", &collection, Some(spec)).await.0, 201);

    let schema = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.yaml");
    let reports = tempfile::tempdir().expect("tempdir");
    let output = Command::new(hookflow_e2e::tool("st"))
        .arg("run")
        .arg(&schema)
        .args(["--url", &base])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "all", "--max-examples", "10", "--seed", "7"])
        // The spec describes shapes; validation refuses meanings the spec cannot state (an
        // https URL with a host, a secret that decodes, a template that parses) with a 400
        // naming the field. So a well-shaped request may be refused; every other check holds.
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args(["--generation-database", "none", "--no-color"])
        .arg("--report-dir")
        .arg(reports.path())
        // schemathesis keeps a crash cache in its working directory: keep it out of the tree.
        .current_dir(reports.path())
        .output()
        .expect("schemathesis (st) is installed by deploy/local/install-deps.sh");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{text}"
    );
    assert!(
        process
            .probe("/_liveness")
            .await
            .is_some_and(|(status, _)| status == 200),
        "the process survived"
    );
}
