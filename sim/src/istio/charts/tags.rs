//! Revision tags, as `istioctl tag generate <tag> --revision <rev>` (and
//! `istioctl install`, for tag `default`) render them: an injector webhook
//! configuration `istio-revision-tag-<tag>` that selects the tag and calls
//! the revision's istiod, and for `default` the `istiod-default-validator`
//! that validates unlabelled config (ISTIO-REFERENCE.md §3).

use serde_json::{Value, json};

use super::discovery::{injector_hooks, validation_hook};
use super::{Revision, map, webhook_api};

/// Tag `tag` pointing at `rev`.
#[must_use]
pub fn revision_tag(tag: &str, rev: &Revision) -> Vec<Value> {
    let hooks = injector_hooks(rev.minor(), tag, &rev.istiod(), tag == "default");
    let mut objects = vec![json!({"apiVersion": webhook_api(rev.minor()), "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": format!("istio-revision-tag-{tag}"),
                     "labels": map([("app", "sidecar-injector"), ("istio.io/rev", rev.name.as_str()), ("istio.io/tag", tag)])},
        "webhooks": hooks})];
    if tag == "default" && rev.minor() >= 12 {
        objects.push(json!({"apiVersion": webhook_api(rev.minor()), "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "istiod-default-validator",
                         "labels": map([("app", "istiod"), ("istio", "istiod"), ("istio.io/rev", rev.name.as_str()), ("istio.io/tag", tag)])},
            "webhooks": [validation_hook("validation.istio.io", &rev.istiod(), None)]}));
    }
    objects
}
