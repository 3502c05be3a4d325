//! Results in words, and how they match what a statement says: errno names
//! (aliases canonical), values quoted and cut to a readable size, lists of
//! names, and the verdict of each operation.

use dsl::ast::{Expected, Op};
use nix::errno::Errno;

use super::ops::Value;

/// How an operation's result compares with what the statement says
/// (`=> RESULT`, or `ok` when it says nothing): whether it holds, the
/// expected text, and the actual one to show. `got` is the value, the errno,
/// or `Err(None)` for a comparison that does not hold (`unmet` says how).
pub fn judge(
    want: Option<&Expected>,
    got: &Result<Value, Option<Errno>>,
    actual: &str,
    unmet: &str,
) -> (bool, String, String) {
    let other = || if matches!(got, Err(None)) { unmet.to_string() } else { actual.to_string() };
    match (want, got) {
        (None | Some(Expected::Ok), Ok(_)) => (true, "ok".to_string(), actual.to_string()),
        (Some(Expected::Any), _) => (true, "any".to_string(), other()),
        (Some(Expected::Open), _) => (true, "?".to_string(), other()),
        (Some(Expected::Errno(e)), Err(Some(err))) => {
            let want = canonical_errno(e);
            (want == errno_name(*err), want, actual.to_string())
        }
        (Some(Expected::Text(t)), Ok(Value::Bytes(b))) => {
            (t.as_slice() == b.as_slice(), quote_bounded(t.as_slice()), actual.to_string())
        }
        (Some(Expected::List(l)), Ok(Value::Names(n))) => {
            let mut want: Vec<Vec<u8>> = l.iter().map(|x| x.0.clone()).collect();
            want.sort();
            (want == *n, list_text(&want), actual.to_string())
        }
        (Some(Expected::AnyError), Err(Some(_))) => (true, "error".into(), actual.to_string()),
        (Some(Expected::OneOf(names)), Err(Some(err))) => {
            let got = errno_name(*err);
            (
                names.iter().any(|n| canonical_errno(n) == got),
                expected_text(want.unwrap_or(&Expected::Ok)),
                actual.to_string(),
            )
        }
        (Some(w), _) => (false, expected_text(w), other()),
        (None, Err(_)) => (false, "ok".into(), other()),
    }
}

/// The verdict of a statement whose result is `ok` or an errno (mount,
/// umount, remount), from its result in words: whether it holds, and the
/// expected text.
pub fn judge_simple(want: Option<&Expected>, actual: &str) -> (bool, String) {
    match want {
        None | Some(Expected::Ok) => (actual == "ok", "ok".to_string()),
        Some(Expected::Errno(e)) => {
            let e = canonical_errno(e);
            (actual == e, e)
        }
        Some(Expected::AnyError) => (actual != "ok", "error".into()),
        Some(Expected::Any) => (true, "any".into()),
        Some(Expected::Open) => (true, "?".into()),
        Some(w @ Expected::OneOf(names)) => (names.iter().any(|n| canonical_errno(n) == actual), expected_text(w)),
        Some(other) => (false, format!("{other:?}")),
    }
}

/// Aliases compare as their canonical names (`ENOTSUP` is `EOPNOTSUPP`).
pub fn canonical_errno(name: &str) -> String {
    dsl::errno::code(name).and_then(dsl::errno::name).unwrap_or(name).to_string()
}

/// An errno as the language writes it (`ENOENT`).
pub fn errno_name(e: Errno) -> String {
    dsl::errno::name(e as i32).map_or_else(|| format!("errno {}", e as i32), str::to_string)
}

/// Values longer than this are shown cut, with their size and hash: a
/// failed read of a large file must not print megabytes.
const SHOWN: usize = 200;

fn short_hash(b: &[u8]) -> String {
    use sha2::Digest;
    crate::tree::short_hex(&sha2::Sha256::digest(b))
}

/// Bytes as a quoted string, cut past [`SHOWN`] bytes.
pub fn quote_bounded(b: &[u8]) -> String {
    if b.len() <= SHOWN {
        return dsl::text::quote(b);
    }
    format!("{}... ({} bytes, sha256 {})", dsl::text::quote(&b[..64]), b.len(), short_hash(b))
}

pub fn list_text(names: &[Vec<u8>]) -> String {
    let v: Vec<String> = names.iter().map(|n| String::from_utf8_lossy(n).into_owned()).collect();
    let all = format!("[{}]", v.join(", "));
    if all.len() <= SHOWN * 4 {
        return all;
    }
    format!("[{}, ...] ({} names, sha256 {})", v[..20.min(v.len())].join(", "), v.len(), short_hash(all.as_bytes()))
}

pub fn expected_text(e: &Expected) -> String {
    match e {
        Expected::Ok => "ok".into(),
        Expected::Errno(n) => canonical_errno(n),
        Expected::Text(t) => quote_bounded(t.as_slice()),
        Expected::List(l) => {
            let mut v: Vec<Vec<u8>> = l.iter().map(|x| x.0.clone()).collect();
            v.sort();
            list_text(&v)
        }
        Expected::AnyError => "error".into(),
        Expected::Any => "any".into(),
        Expected::Open => "?".into(),
        Expected::OneOf(names) => names.iter().map(|n| canonical_errno(n)).collect::<Vec<_>>().join("|"),
    }
}

/// A result that holds for more than one outcome (`?`, `any`, `error`, a
/// set): the step records what it got in the language's words.
pub fn open_ended(e: &Expected) -> bool {
    matches!(e, Expected::Open | Expected::Any | Expected::AnyError | Expected::OneOf(_))
}

/// What an operation did, as the language writes a result after `=>`, in
/// full (never cut): what `ovlc bless` writes and `ovlc grade` compares.
/// `None` for a comparison that did not hold, which no result can say.
pub fn language_text(op: &Op, got: &Result<Value, Option<Errno>>) -> Option<String> {
    Some(match got {
        // A comparison that did not hold, a read longer than a step keeps.
        Err(None) | Ok(Value::Longer(_)) => return None,
        Err(Some(e)) => errno_name(*e),
        Ok(Value::Names(n)) => {
            dsl::result_text(&Expected::List(n.iter().map(|x| dsl::text::Bytes(x.clone())).collect()))
        }
        Ok(v @ Value::Bytes(b)) => match describe_value(op, v).as_str() {
            "ok" => "ok".into(),
            _ => dsl::text::quote(b),
        },
        Ok(_) => "ok".into(),
    })
}

pub fn describe_value(op: &Op, v: &Value) -> String {
    match v {
        Value::None => "ok".into(),
        Value::Bytes(b) => match op {
            Op::Read { .. }
            | Op::Readlink { .. }
            | Op::Measure { .. }
            | Op::Getxattr { .. }
            | Op::FdRead { .. }
            | Op::Fgetxattr { .. }
            | Op::MmapRead { .. } => quote_bounded(b),
            _ => "ok".into(),
        },
        Value::Longer(b) => format!(
            "{}... (more than {} bytes: the read stopped there)",
            dsl::text::quote(&b[..64.min(b.len())]),
            crate::exec::ops::MAX_READ
        ),
        Value::Names(n) => list_text(n),
        Value::Remember(..) | Value::Handle(..) => "ok".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsl::text::Bytes;

    fn text(s: &str) -> Expected {
        Expected::Text(Bytes(s.as_bytes().to_vec()))
    }

    #[test]
    fn errno_aliases_compare_as_one() {
        assert_eq!(canonical_errno("ENOTSUP"), canonical_errno("EOPNOTSUPP"));
        assert_eq!(canonical_errno("ENOENT"), "ENOENT");
        assert_eq!(errno_name(Errno::EXDEV), "EXDEV");
        let (ok, want, _) = judge(
            Some(&Expected::Errno("ENOTSUP".into())),
            &Err(Some(Errno::EOPNOTSUPP)),
            "EOPNOTSUPP",
            "different inode",
        );
        assert!(ok, "the alias matches: expected {want}");
    }

    #[test]
    fn verdicts_compare_values_errnos_and_lists() {
        let ok = |want: Option<&Expected>, got: Result<Value, Option<Errno>>, actual: &str| {
            judge(want, &got, actual, "different inode")
        };
        assert!(ok(None, Ok(Value::None), "ok").0, "nothing said: ok expected");
        assert_eq!(ok(None, Err(Some(Errno::ENOENT)), "ENOENT"), (false, "ok".into(), "ENOENT".into()));
        assert!(ok(Some(&text("x")), Ok(Value::Bytes(b"x".to_vec())), "\"x\"").0);
        assert_eq!(
            ok(Some(&text("x")), Ok(Value::Bytes(b"y".to_vec())), "\"y\""),
            (false, "\"x\"".into(), "\"y\"".into())
        );
        let names = Expected::List(vec![Bytes(b"b".to_vec()), Bytes(b"a".to_vec())]);
        assert!(ok(Some(&names), Ok(Value::Names(vec![b"a".to_vec(), b"b".to_vec()])), "[a, b]").0, "order aside");
        assert_eq!(ok(Some(&names), Ok(Value::Names(vec![b"a".to_vec()])), "[a]").1, "[a, b]");
        // same-inode on another inode reads as such, whatever was expected.
        assert_eq!(ok(Some(&Expected::Ok), Err(None), "x").2, "different inode");
        assert_eq!(ok(None, Err(None), "x"), (false, "ok".into(), "different inode".into()));
        // An errno expected, a value found.
        assert_eq!(
            ok(Some(&Expected::Errno("EXDEV".into())), Ok(Value::None), "ok"),
            (false, "EXDEV".into(), "ok".into())
        );
    }

    #[test]
    fn simple_statements_expect_ok_or_errnos() {
        assert_eq!(judge_simple(None, "ok"), (true, "ok".into()));
        assert_eq!(judge_simple(Some(&Expected::Ok), "EBUSY"), (false, "ok".into()));
        assert!(judge_simple(Some(&Expected::Errno("ENOTSUP".into())), &canonical_errno("EOPNOTSUPP")).0);
        assert_eq!(judge_simple(Some(&Expected::AnyError), "EBUSY"), (true, "error".into()));
        // `any` records whatever happened and never fails.
        assert_eq!(judge_simple(Some(&Expected::Any), "EINVAL"), (true, "any".into()));
        assert_eq!(judge_simple(Some(&Expected::Any), "ok"), (true, "any".into()));
        assert!(judge(Some(&Expected::Any), &Err(Some(Errno::EXDEV)), "EXDEV", "x").0);
        assert_eq!(judge(Some(&Expected::Any), &Ok(Value::None), "ok", "x").2, "ok");
        assert!(!judge_simple(Some(&Expected::AnyError), "ok").0, "`error` wants a failure");
        let either = Expected::OneOf(vec!["EXDEV".into(), "ENOTEMPTY".into()]);
        assert_eq!(judge_simple(Some(&either), "ENOTEMPTY"), (true, "EXDEV|ENOTEMPTY".into()));
        assert!(!judge_simple(Some(&either), "EBUSY").0);
    }

    #[test]
    fn any_error_and_sets_of_errnos() {
        let any = judge(Some(&Expected::AnyError), &Err(Some(Errno::EXDEV)), "EXDEV", "different inode");
        assert_eq!(any, (true, "error".into(), "EXDEV".into()));
        assert!(!judge(Some(&Expected::AnyError), &Ok(Value::None), "ok", "different inode").0);
        let either = Expected::OneOf(vec!["EXDEV".into(), "ENOTSUP".into()]);
        assert!(
            judge(Some(&either), &Err(Some(Errno::EOPNOTSUPP)), "EOPNOTSUPP", "different inode").0,
            "aliases count"
        );
        let (ok, want, _) = judge(Some(&either), &Err(Some(Errno::ENOENT)), "ENOENT", "different inode");
        assert!(!ok && want == format!("EXDEV|{}", canonical_errno("ENOTSUP")));
    }

    #[test]
    fn large_values_are_cut_with_their_size_and_hash() {
        assert_eq!(quote_bounded(b"short"), "\"short\"");
        let big = vec![b'a'; 1000];
        let shown = quote_bounded(&big);
        assert!(shown.len() < 120 && shown.contains("(1000 bytes, sha256 "), "{shown}");
        let many: Vec<Vec<u8>> = (0..500).map(|i| format!("name{i:03}").into_bytes()).collect();
        let l = list_text(&many);
        assert!(l.contains("(500 names, sha256 ") && l.starts_with("[name000, "), "{l}");
        assert_eq!(list_text(&[b"a".to_vec(), b"b".to_vec()]), "[a, b]");
        let longer = describe_value(&dsl::ast::Op::Sync, &Value::Longer(big));
        assert!(longer.contains("the read stopped there"), "{longer}");
        assert_eq!(describe_value(&dsl::ast::Op::Sync, &Value::Bytes(b"x".to_vec())), "ok", "only reads show bytes");
    }
}
