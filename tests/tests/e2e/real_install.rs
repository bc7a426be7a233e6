//! Istio's real generated output as the upgrade tests use it: the golden
//! istiod of a default install (`pilot_default.golden.yaml`) and its
//! ingress gateway (`ingressgateway_k8s_settings.golden.yaml`), turned into
//! another version or revision only in the ways the charts' templates do:
//! the image tag and `global.tag` (`--set tag=`), and what `--set
//! revision=R` changes (names suffixed `-R`, `istio.io/rev: R`, the
//! revisioned selectors, webhooks and addresses; ISTIO-REFERENCE.md §2 and
//! the charts' templates). What the golden subsets leave out (the base
//! chart's CRDs, the gateway's account) comes from the simulator's own
//! rendering, which the `istio_real` test holds to Istio's.

use serde_json::{Value, json};

use crate::istio_real::golden;

/// The chart version of the golden files' images.
const GOLDEN_TAG: &str = "1.1.4";

/// Every string in `value` with `from` replaced by `to`, keys left alone.
fn replace_in(value: &mut Value, from: &str, to: &str) {
    match value {
        Value::String(text) => *text = text.replace(from, to),
        Value::Array(items) => items.iter_mut().for_each(|item| replace_in(item, from, to)),
        Value::Object(map) => map.values_mut().for_each(|item| replace_in(item, from, to)),
        _ => {}
    }
}

/// `objects` of Istio `version` (`--set tag=<version>`): image tags and the
/// injector's `global.tag`.
fn retagged(mut objects: Vec<Value>, version: &str) -> Vec<Value> {
    for object in &mut objects {
        replace_in(object, &format!(":{GOLDEN_TAG}"), &format!(":{version}"));
        // The gateway golden file's test chart tags its proxy `latest`.
        replace_in(object, "proxyv2:latest", &format!("proxyv2:{version}"));
        for key in ["values", "merged-values", "original-values"] {
            if let Some(text) = object.pointer(&format!("/data/{key}")).and_then(Value::as_str) {
                let mut values: Value = serde_json::from_str(text).expect("values JSON");
                if values.pointer("/global/tag").is_some_and(|tag| tag == GOLDEN_TAG) {
                    values["global"]["tag"] = json!(version);
                }
                object["data"][key] = json!(values.to_string());
            }
        }
    }
    objects
}

/// The names `--set revision=R` gives what the default install names `name`.
fn revisioned_name(kind: &str, name: &str, revision: &str) -> String {
    match (kind, name) {
        (_, "istiod") => format!("istiod-{revision}"),
        ("ConfigMap", "istio" | "istio-sidecar-injector" | "values") => format!("{name}-{revision}"),
        ("MutatingWebhookConfiguration", "istio-sidecar-injector") => format!("istio-sidecar-injector-{revision}"),
        (_, name) if name.ends_with("-istio-system") => {
            format!("{}-{revision}-istio-system", name.trim_end_matches("-istio-system"))
        }
        (_, name) => name.to_string(),
    }
}

/// The default install's istiod objects as `--set revision=<revision>`
/// renders them.
fn revisioned(objects: Vec<Value>, revision: &str) -> Vec<Value> {
    let istiod = format!("istiod-{revision}");
    objects
        .into_iter()
        .map(|mut object| {
            let kind = object["kind"].as_str().unwrap_or_default().to_string();
            let name = object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
            object["metadata"]["name"] = json!(revisioned_name(&kind, &name, revision));
            if object.pointer("/metadata/labels/istio.io~1rev").is_some() {
                object["metadata"]["labels"]["istio.io/rev"] = json!(revision);
            }
            match kind.as_str() {
                "Deployment" => {
                    object["spec"]["selector"]["matchLabels"] = json!({"app": "istiod", "istio.io/rev": revision});
                    let labels = &mut object["spec"]["template"]["metadata"]["labels"];
                    labels["istio"] = json!("istiod");
                    labels["istio.io/rev"] = json!(revision);
                    object["spec"]["template"]["spec"]["serviceAccountName"] = json!(istiod);
                    for env in object
                        .pointer_mut("/spec/template/spec/containers/0/env")
                        .and_then(Value::as_array_mut)
                        .into_iter()
                        .flatten()
                    {
                        if env["name"] == "REVISION" {
                            env["value"] = json!(revision);
                        }
                    }
                }
                "Service" => object["spec"]["selector"] = json!({"app": "istiod", "istio.io/rev": revision}),
                "HorizontalPodAutoscaler" => object["spec"]["scaleTargetRef"]["name"] = json!(istiod),
                "RoleBinding" | "ClusterRoleBinding" => {
                    let role = object.pointer("/roleRef/name").and_then(Value::as_str).unwrap_or_default().to_string();
                    object["roleRef"]["name"] = json!(revisioned_name(
                        if kind == "RoleBinding" { "Role" } else { "ClusterRole" },
                        &role,
                        revision
                    ));
                    for subject in object.get_mut("subjects").and_then(Value::as_array_mut).into_iter().flatten() {
                        if subject["name"] == "istiod" {
                            subject["name"] = json!(istiod);
                        }
                    }
                }
                "MutatingWebhookConfiguration" => {
                    // The default revision's namespace./object. webhooks are not rendered for a revision.
                    let hooks = object["webhooks"].as_array_mut().expect("webhooks");
                    hooks.retain(|hook| hook["name"].as_str().is_some_and(|name| name.starts_with("rev.")));
                    revisioned_hooks(hooks, revision, &istiod);
                }
                "ValidatingWebhookConfiguration" => {
                    let hooks = object["webhooks"].as_array_mut().expect("webhooks");
                    revisioned_hooks(hooks, revision, &istiod);
                }
                "ConfigMap" => {
                    if let Some(mesh) = object.pointer("/data/mesh").and_then(Value::as_str) {
                        object["data"]["mesh"] =
                            json!(mesh.replace("istiod.istio-system.svc", &format!("{istiod}.istio-system.svc")));
                    }
                    for key in ["values", "merged-values", "original-values"] {
                        if let Some(text) = object.pointer(&format!("/data/{key}")).and_then(Value::as_str) {
                            let mut values: Value = serde_json::from_str(text).expect("values JSON");
                            values["revision"] = json!(revision);
                            object["data"][key] = json!(values.to_string());
                        }
                    }
                }
                _ => {}
            }
            object
        })
        .collect()
}

fn revisioned_hooks(hooks: &mut [Value], revision: &str, istiod: &str) {
    for hook in hooks {
        hook["clientConfig"]["service"]["name"] = json!(istiod);
        replace_in(&mut hook["namespaceSelector"], "default", revision);
        replace_in(&mut hook["objectSelector"], "default", revision);
    }
}

/// The ingress gateway of the golden file, its account beside it.
fn gateway() -> Vec<Value> {
    let objects: Vec<Value> = golden("ingressgateway_k8s_settings.golden.yaml")
        .into_iter()
        .filter(|o| o.pointer("/metadata/name") == Some(&json!("istio-ingressgateway")))
        .collect();
    let account = json!({"apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "istio-ingressgateway-service-account", "namespace": "istio-system",
                     "labels": objects[0]["metadata"]["labels"].clone()}});
    std::iter::once(account).chain(objects).collect()
}

/// The gateway as `--set revision=R` renders it: its revision labels and
/// annotation, its control plane's address and mesh config.
fn revisioned_gateway(objects: Vec<Value>, revision: &str) -> Vec<Value> {
    objects
        .into_iter()
        .map(|mut object| {
            if object.pointer("/metadata/labels/istio.io~1rev").is_some() {
                object["metadata"]["labels"]["istio.io/rev"] = json!(revision);
            }
            if let Some(template) = object.pointer_mut("/spec/template") {
                template["metadata"]["labels"]["istio.io/rev"] = json!(revision);
                template["metadata"]["annotations"]["istio.io/rev"] = json!(revision);
                replace_in(
                    &mut template["spec"],
                    "istiod.istio-system.svc",
                    &format!("istiod-{revision}.istio-system.svc"),
                );
                for volume in template.pointer_mut("/spec/volumes").and_then(Value::as_array_mut).into_iter().flatten()
                {
                    if volume.pointer("/configMap/name") == Some(&json!("istio")) {
                        volume["configMap"]["name"] = json!(format!("istio-{revision}"));
                    }
                }
            }
            object
        })
        .collect()
}

/// A default install of Istio `version` as `istioctl manifest generate`
/// prints it: istiod and the ingress gateway.
pub fn default_install(version: &str) -> Vec<Value> {
    let mut objects = retagged(golden("pilot_default.golden.yaml"), version);
    objects.extend(retagged(gateway(), version));
    objects
}

/// What `istioctl manifest generate --set revision=<revision> --set
/// tag=<version>` prints: istiod and the gateway of that revision, and the
/// base's CRDs.
pub fn revision_manifests(revision: &str, version: &str) -> String {
    let mut objects = revisioned(retagged(golden("pilot_default.golden.yaml"), version), revision);
    objects.extend(revisioned_gateway(retagged(gateway(), version), revision));
    objects.extend(canaryflow_sim::crds(version));
    canaryflow_sim::to_yaml(&objects).expect("yaml")
}

#[test]
fn a_revision_renders_the_revisions_names_and_keeps_nothing_of_the_default() {
    let manifests: Vec<Value> = serde_saphyr::from_multiple(&revision_manifests("1-28-0", "1.28.0")).expect("yaml");
    let names: Vec<String> = manifests
        .iter()
        .filter(|o| o["kind"] != "CustomResourceDefinition")
        .map(|o| {
            format!("{} {}", o["kind"].as_str().unwrap_or_default(), o["metadata"]["name"].as_str().unwrap_or_default())
        })
        .collect();
    for expected in [
        "ServiceAccount istiod-1-28-0",
        "ClusterRole istiod-clusterrole-1-28-0-istio-system",
        "ClusterRoleBinding istio-reader-clusterrole-1-28-0-istio-system",
        "ValidatingWebhookConfiguration istio-validator-1-28-0-istio-system",
        "ConfigMap istio-sidecar-injector-1-28-0",
        "MutatingWebhookConfiguration istio-sidecar-injector-1-28-0",
        "Deployment istiod-1-28-0",
    ] {
        assert!(names.iter().any(|name| name == expected), "{expected} in {names:?}");
    }
    let text = serde_json::to_string(&manifests).expect("json");
    assert!(!text.contains("\"istio.io/rev\":\"default\""), "nothing is labelled for the default revision");
    assert!(!text.contains(":1.1.4"), "every image is 1.28.0");
}
