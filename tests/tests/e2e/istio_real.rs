//! The simulator against Istio's own installer: for each golden file of
//! `istioctl manifest generate` (tests/fixtures/istio-real, copied
//! unchanged from istio/istio), the simulator renders the same
//! configuration, selects what Istio's test selects, and must agree on
//! every object's kind, namespace and name, its labels (version strings
//! aside: the golden files come from test charts versioned 1.0.0), its
//! selectors, its webhooks' rules, selectors and services, and the
//! service accounts it references. A difference fails the test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use canaryflow_sim::{GatewayKind, Render, Revision, cni, discovery, gateway, ztunnel};
use serde_json::{Value, json};

/// Where the golden files are kept in this repository.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/istio-real")
}

/// The objects of a golden file.
pub fn golden(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join(name)).expect("golden file");
    serde_saphyr::from_multiple::<Value>(&text).expect("golden YAML").into_iter().filter(|d| !d.is_null()).collect()
}

/// The version the simulator renders as current; the golden files' charts are 1.0.0.
const CURRENT: &str = "1.28.0";

/// What the comparison looks at in one object.
fn essence(object: &Value) -> Value {
    let text = |pointer: &str| object.pointer(pointer).cloned().unwrap_or(Value::Null);
    let labels = |pointer: &str| {
        let mut labels: BTreeMap<String, Value> = object
            .pointer(pointer)
            .and_then(Value::as_object)
            .map(|labels| labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        for key in ["app.kubernetes.io/version", "helm.sh/chart"] {
            if let Some(value) = labels.get_mut(key) {
                *value = json!(value.as_str().unwrap_or_default().replace(CURRENT, "1.0.0"));
            }
        }
        json!(labels)
    };
    let webhooks: Vec<Value> = object
        .get("webhooks")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|hook| {
            json!({"name": hook["name"], "rules": hook["rules"], "failurePolicy": hook["failurePolicy"],
                   "namespaceSelector": hook.get("namespaceSelector").cloned().unwrap_or(json!({})),
                   "objectSelector": hook.get("objectSelector").cloned().unwrap_or(json!({})),
                   "service": {"name": hook.pointer("/clientConfig/service/name"), "namespace": hook.pointer("/clientConfig/service/namespace"),
                               "path": hook.pointer("/clientConfig/service/path")}})
        })
        .collect();
    let subjects: Vec<Value> = object
        .get("subjects")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|s| json!({"kind": s["kind"], "name": s["name"], "namespace": s["namespace"]}))
        .collect();
    json!({
        "apiVersion": text("/apiVersion"),
        "labels": labels("/metadata/labels"),
        "templateLabels": labels("/spec/template/metadata/labels"),
        "selector": object.pointer("/spec/selector").cloned().unwrap_or(Value::Null),
        "serviceAccount": text("/spec/template/spec/serviceAccountName"),
        "subjects": subjects,
        "roleRef": text("/roleRef/name"),
        "webhooks": webhooks,
    })
}

fn key(object: &Value) -> (String, String, String) {
    let text = |pointer: &str| object.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_string();
    (text("/kind"), text("/metadata/namespace"), text("/metadata/name"))
}

/// Compares the simulator's `rendered` objects (those `select` keeps, as
/// Istio's test's diffSelect does) with golden file `name`.
fn compare(name: &str, rendered: Vec<Value>, select: &dyn Fn(&Value) -> bool) -> Vec<String> {
    let expected: BTreeMap<_, _> = golden(name).iter().map(|o| (key(o), essence(o))).collect();
    let got: BTreeMap<_, _> = rendered.iter().filter(|o| select(o)).map(|o| (key(o), essence(o))).collect();
    let mut differences = Vec::new();
    for (object, want) in &expected {
        match got.get(object) {
            None => differences.push(format!("{name}: the simulator does not render {object:?}")),
            Some(have) if have != want => {
                let fields: Vec<&str> = [
                    "apiVersion",
                    "labels",
                    "templateLabels",
                    "selector",
                    "serviceAccount",
                    "subjects",
                    "roleRef",
                    "webhooks",
                ]
                .into_iter()
                .filter(|field| have[field] != want[field])
                .collect();
                for field in fields {
                    differences.push(format!(
                        "{name}: {object:?} {field}:\n  istio:     {}\n  simulator: {}",
                        want[field], have[field]
                    ));
                }
            }
            Some(_) => {}
        }
    }
    for object in got.keys().filter(|object| !expected.contains_key(*object)) {
        differences.push(format!("{name}: the simulator renders {object:?}, which Istio does not"));
    }
    differences
}

fn default_revision() -> Revision {
    Revision::new("default", CURRENT).expect("revision")
}

#[test]
fn the_simulator_renders_what_istios_installer_renders() {
    let rev = default_revision();
    let kind_is =
        |kinds: &'static [&'static str]| move |o: &Value| kinds.contains(&o["kind"].as_str().unwrap_or_default());
    let mut differences = Vec::new();

    differences.extend(compare("pilot_default.golden.yaml", discovery(&rev, &Render::default()), &|_| true));

    let hpa_pdb = Render { pilot_autoscale: Some((2, 80, None)), pilot_pdb: true, ..Render::default() };
    differences.extend(compare(
        "pilot_hpa_pdb.golden.yaml",
        discovery(&rev, &hpa_pdb),
        &kind_is(&["PodDisruptionBudget", "HorizontalPodAutoscaler"]),
    ));

    let gateway_hpa_pdb = Render { gateway_autoscale: Some((2, 80, None)), gateway_pdb: true, ..Render::default() };
    differences.extend(compare(
        "gateway_hpa_pdb.golden.yaml",
        gateway(GatewayKind::Ingress, "istio-ingressgateway", &rev, &gateway_hpa_pdb),
        &kind_is(&["PodDisruptionBudget", "HorizontalPodAutoscaler"]),
    ));

    let autoscaling = Render {
        pilot_autoscale: Some((1, 90, Some(90))),
        gateway_autoscale: Some((1, 80, None)),
        ..Render::default()
    };
    let mut both = discovery(&rev, &autoscaling);
    both.extend(gateway(GatewayKind::Ingress, "istio-ingressgateway", &rev, &autoscaling));
    differences.extend(compare("autoscaling_v2.golden.yaml", both, &kind_is(&["HorizontalPodAutoscaler"])));

    let mut gateways = gateway(GatewayKind::Ingress, "istio-ingressgateway", &rev, &Render::default());
    gateways.extend(gateway(GatewayKind::Ingress, "istio-ingressgateway-custom", &rev, &Render::default()));
    differences.extend(compare(
        "ingressgateway_k8s_settings.golden.yaml",
        gateways,
        &kind_is(&["Deployment", "Service"]),
    ));

    let egress = gateway(GatewayKind::Egress, "istio-egressgateway", &rev, &Render::default());
    differences.extend(compare("flag_values_enable_egressgateway.golden.yaml", egress, &kind_is(&["Service"])));

    differences.extend(compare("istio-cni.golden.yaml", cni(CURRENT, "default"), &kind_is(&["DaemonSet"])));
    differences.extend(compare("ztunnel.golden.yaml", ztunnel(CURRENT), &kind_is(&["DaemonSet"])));

    assert!(
        differences.is_empty(),
        "{} differences from Istio's own output:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

/// The repository's copies are the shared golden files, unchanged.
#[test]
fn the_fixtures_are_istios_files_unchanged() {
    let shared = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/istio-real");
    let Ok(entries) = std::fs::read_dir(&shared) else { return };
    for entry in entries {
        let path = entry.expect("entry").path();
        let name = path.file_name().expect("name");
        let ours = std::fs::read(fixtures().join(name)).unwrap_or_else(|_| panic!("{name:?} is not copied"));
        assert_eq!(ours, std::fs::read(&path).expect("shared file"), "{name:?} differs from the shared copy");
    }
}
