//! What moved between two stats snapshots, as JSON Pointers (RFC 6901).

use serde_json::Value;

/// Pointers to every leaf (or added/removed member) that differs between
/// `old` and `new`, in document order of `new` then removals.
pub fn changed(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(old, new, &mut String::new(), &mut out);
    out
}

fn walk(old: &Value, new: &Value, path: &mut String, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, vb) in b {
                let len = path.len();
                push_token(path, k);
                match a.get(k) {
                    Some(va) => walk(va, vb, path, out),
                    None => out.push(path.clone()),
                }
                path.truncate(len);
            }
            for k in a.keys().filter(|k| !b.contains_key(*k)) {
                let len = path.len();
                push_token(path, k);
                out.push(path.clone());
                path.truncate(len);
            }
        }
        (a, b) if a != b => out.push(path.clone()),
        _ => {}
    }
}

fn push_token(path: &mut String, key: &str) {
    path.push('/');
    for c in key.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_leaves_additions_and_removals() {
        let a = json!({"counts":{"message.sent":1,"x":2},"online_users":3,"states":{}});
        let b = json!({"counts":{"message.sent":2,"y":1},"online_users":3,"states":{"task":{"done":1}}});
        assert_eq!(
            changed(&a, &b),
            vec![
                "/counts/message.sent",
                "/counts/y",
                "/counts/x",
                "/states/task"
            ]
        );
        assert!(changed(&b, &b).is_empty());
    }

    #[test]
    fn escapes_tokens() {
        let a = json!({"counts":{}});
        let b = json!({"counts":{"a/b~c":1}});
        assert_eq!(changed(&a, &b), vec!["/counts/a~1b~0c"]);
    }
}
