//! The JSON of list items as last written: a list read again writes what
//! did not change by copying it.

use std::sync::Arc;

use serde::ser::{Serialize, Serializer};
use serde_json::Value;

/// The JSON of list items as last written, by stored object. The entry
/// holds the object weakly: its JSON holds while the object lives at that
/// address. An object changed in place through `Arc::make_mut` (a
/// deletion stamping its resourceVersion) is moved to a new allocation
/// when weak references to it exist, so a change is never answered with
/// what was written before it.
#[derive(Debug, Default)]
pub struct ItemsWritten {
    entries: std::sync::Mutex<ItemsWrittenEntries>,
}

#[derive(Debug, Default)]
struct ItemsWrittenEntries {
    by_object: std::collections::HashMap<usize, (std::sync::Weak<Value>, Arc<[u8]>)>,
    /// Entries at the last sweep of dead ones; the next sweep comes at twice as many.
    swept_count: usize,
}

/// Entries kept before dead ones are swept (and at least twice as many as
/// were alive at the last sweep).
const ITEMS_WRITTEN_SWEEP_COUNT_MIN: usize = 4_096;

impl ItemsWritten {
    /// Appends `item` as a list item to `out`.
    pub fn write(&self, item: &Arc<Value>, out: &mut Vec<u8>) {
        let key = Arc::as_ptr(item) as usize;
        let cached = {
            let entries = self.entries.lock().expect("items written lock poisoned");
            entries.by_object.get(&key).filter(|(weak, _)| weak.strong_count() > 0).map(|(_, json)| Arc::clone(json))
        };
        if let Some(json) = cached {
            out.extend_from_slice(&json);
            return;
        }
        let json: Arc<[u8]> = serde_json::to_vec(&ListItem(item)).unwrap_or_default().into();
        out.extend_from_slice(&json);
        let mut entries = self.entries.lock().expect("items written lock poisoned");
        entries.by_object.insert(key, (Arc::downgrade(item), json));
        if entries.by_object.len() >= (2 * entries.swept_count).max(ITEMS_WRITTEN_SWEEP_COUNT_MIN) {
            entries.by_object.retain(|_, (weak, _)| weak.strong_count() > 0);
            entries.swept_count = entries.by_object.len();
        }
    }
}

/// An item of a typed list: the object without its kind and apiVersion.
struct ListItem<'a>(&'a Value);

impl Serialize for ListItem<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Value::Object(fields) = self.0 else { return self.0.serialize(serializer) };
        serializer.collect_map(fields.iter().filter(|(key, _)| !matches!(key.as_str(), "kind" | "apiVersion")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn written(items: &ItemsWritten, item: &Arc<Value>) -> Value {
        let mut out = Vec::new();
        items.write(item, &mut out);
        serde_json::from_slice(&out).expect("an item is JSON")
    }

    /// A list item's JSON is kept while its object lives and written again
    /// from the object for any other object, also one at the same address.
    #[test]
    fn list_items_are_written_once_per_stored_object() {
        let items = ItemsWritten::default();
        let first =
            Arc::new(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"x": "1"}}));
        assert_eq!(written(&items, &first), json!({"metadata": {"name": "a"}, "data": {"x": "1"}}));
        assert_eq!(written(&items, &first)["data"]["x"], "1");
        assert_eq!(items.entries.lock().expect("lock").by_object.len(), 1, "written once, kept");
        // Changed through make_mut (as a deletion stamps its resourceVersion): written afresh.
        let mut first = first;
        crate::kube::object::metadata_mut(Arc::make_mut(&mut first)).insert("resourceVersion".into(), json!("7"));
        assert_eq!(written(&items, &first)["metadata"]["resourceVersion"], "7");
        drop(first);
        for round in 0..3 {
            // A new object, whatever address it gets, is written afresh.
            let next = Arc::new(json!({"metadata": {"name": "a"}, "data": {"x": format!("v{round}")}}));
            assert_eq!(written(&items, &next)["data"]["x"], format!("v{round}"));
        }
        for _ in 0..2 * ITEMS_WRITTEN_SWEEP_COUNT_MIN {
            written(&items, &Arc::new(json!({"metadata": {"name": "gone"}})));
        }
        let kept = items.entries.lock().expect("lock").by_object.len();
        assert!(kept <= ITEMS_WRITTEN_SWEEP_COUNT_MIN, "entries of objects gone are swept: {kept} kept");
    }
}
