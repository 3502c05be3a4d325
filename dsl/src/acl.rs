//! POSIX ACLs as `setacl` and the `acl` check write them
//! (`u::rw-,u:1000:r--,g::r--,m::r--,o::---`), and as the kernel stores
//! them in `system.posix_acl_access` / `system.posix_acl_default`.

use serde::{Deserialize, Serialize};

/// An ACL entry's kind, with the kernel's tag value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AclTag {
    UserObj,
    User,
    GroupObj,
    Group,
    Mask,
    Other,
}

impl AclTag {
    fn value(self) -> u16 {
        match self {
            AclTag::UserObj => 0x01,
            AclTag::User => 0x02,
            AclTag::GroupObj => 0x04,
            AclTag::Group => 0x08,
            AclTag::Mask => 0x10,
            AclTag::Other => 0x20,
        }
    }

    fn from_value(v: u16) -> Option<AclTag> {
        [AclTag::UserObj, AclTag::User, AclTag::GroupObj, AclTag::Group, AclTag::Mask, AclTag::Other]
            .into_iter()
            .find(|t| t.value() == v)
    }

    /// Does the entry name a uid or gid (`u:1000:...`)?
    fn qualified(self) -> bool {
        matches!(self, AclTag::User | AclTag::Group)
    }

    fn letter(self) -> char {
        match self {
            AclTag::UserObj | AclTag::User => 'u',
            AclTag::GroupObj | AclTag::Group => 'g',
            AclTag::Mask => 'm',
            AclTag::Other => 'o',
        }
    }
}

/// One entry: its kind, the uid or gid of `u:ID:` and `g:ID:` entries, and
/// its permissions (r = 4, w = 2, x = 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AclEntry {
    pub tag: AclTag,
    pub id: Option<u32>,
    pub perm: u8,
}

/// An ACL, its entries in the kernel's order (by kind, then id).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl(pub Vec<AclEntry>);

const VERSION: u32 = 2;
const UNDEFINED_ID: u32 = u32::MAX;

/// The xattr an ACL lives in: the access ACL, or a directory's default ACL.
pub fn xattr_name(default: bool) -> &'static str {
    if default {
        "system.posix_acl_default"
    } else {
        "system.posix_acl_access"
    }
}

impl Acl {
    /// Parses the short text form; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Acl, String> {
        let mut entries = Vec::new();
        for item in text.split(',').map(str::trim) {
            let parts: Vec<&str> = item.split(':').collect();
            let [kind, id, perm] = parts[..] else {
                return Err(format!("`{item}` is not KIND:ID:PERMS (like `u::rw-` or `g:100:r-x`)"));
            };
            let named = !id.is_empty();
            let tag = match (kind, named) {
                ("u" | "user", false) => AclTag::UserObj,
                ("u" | "user", true) => AclTag::User,
                ("g" | "group", false) => AclTag::GroupObj,
                ("g" | "group", true) => AclTag::Group,
                ("m" | "mask", false) => AclTag::Mask,
                ("o" | "other", false) => AclTag::Other,
                ("m" | "mask" | "o" | "other", true) => return Err(format!("`{item}`: {kind} entries name no id")),
                _ => return Err(format!("`{item}`: the kind is u, g, m or o")),
            };
            let id = if named {
                Some(
                    id.parse::<u32>()
                        .ok()
                        .filter(|i| *i != UNDEFINED_ID)
                        .ok_or(format!("`{item}`: `{id}` is no id"))?,
                )
            } else {
                None
            };
            let b = perm.as_bytes();
            let ok = b.len() == 3
                && matches!(b[0], b'r' | b'-')
                && matches!(b[1], b'w' | b'-')
                && matches!(b[2], b'x' | b'-');
            if !ok {
                return Err(format!("`{item}`: permissions are three letters like `rw-`"));
            }
            let perm = u8::from(b[0] == b'r') * 4 + u8::from(b[1] == b'w') * 2 + u8::from(b[2] == b'x');
            let e = AclEntry { tag, id, perm };
            if entries.iter().any(|x: &AclEntry| x.tag == e.tag && x.id == e.id) {
                return Err(format!("`{item}` is given twice"));
            }
            entries.push(e);
        }
        entries.sort();
        let has = |t| entries.iter().any(|e| e.tag == t);
        if !(has(AclTag::UserObj) && has(AclTag::GroupObj) && has(AclTag::Other)) {
            return Err("an ACL has `u::`, `g::` and `o::` entries".into());
        }
        if (has(AclTag::User) || has(AclTag::Group)) && !has(AclTag::Mask) {
            return Err("an ACL with `u:ID:` or `g:ID:` entries needs a mask (`m::`)".into());
        }
        Ok(Acl(entries))
    }

    /// The xattr value the kernel reads.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = VERSION.to_le_bytes().to_vec();
        for e in &self.0 {
            out.extend_from_slice(&e.tag.value().to_le_bytes());
            out.extend_from_slice(&u16::from(e.perm).to_le_bytes());
            out.extend_from_slice(&e.id.unwrap_or(UNDEFINED_ID).to_le_bytes());
        }
        out
    }

    /// An xattr value as the kernel gives it; `None` when it is none.
    pub fn decode(b: &[u8]) -> Option<Acl> {
        let (head, rest) = b.split_at_checked(4)?;
        if u32::from_le_bytes(head.try_into().ok()?) != VERSION || rest.len() % 8 != 0 {
            return None;
        }
        let mut entries = Vec::new();
        for c in rest.chunks_exact(8) {
            let tag = AclTag::from_value(u16::from_le_bytes([c[0], c[1]]))?;
            let perm = (u16::from_le_bytes([c[2], c[3]]) & 7) as u8;
            let id = u32::from_le_bytes([c[4], c[5], c[6], c[7]]);
            entries.push(AclEntry { tag, id: tag.qualified().then_some(id), perm });
        }
        entries.sort();
        Some(Acl(entries))
    }
}

impl std::fmt::Display for Acl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let items: Vec<String> = self
            .0
            .iter()
            .map(|e| {
                let p = |bit: u8, c: char| if e.perm & bit != 0 { c } else { '-' };
                let id = e.id.map(|i| i.to_string()).unwrap_or_default();
                format!("{}:{id}:{}{}{}", e.tag.letter(), p(4, 'r'), p(2, 'w'), p(1, 'x'))
            })
            .collect();
        f.write_str(&items.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acls_round_trip_through_text_and_bytes() {
        let a = Acl::parse("o::---, u:1000:r--,u::rw-,g::r--,m::r-x,g:100:rwx").unwrap();
        assert_eq!(a.to_string(), "u::rw-,u:1000:r--,g::r--,g:100:rwx,m::r-x,o::---");
        assert_eq!(Acl::decode(&a.encode()), Some(a.clone()));
        assert_eq!(&a.encode()[..8], &[2, 0, 0, 0, 1, 0, 6, 0]);
    }

    #[test]
    fn malformed_acls_say_why() {
        for (bad, why) in [
            ("u::rw-", "an ACL has"),
            ("u::rw-,g::r--,o::---,u:1:r--", "needs a mask"),
            ("u::rwz,g::r--,o::---", "three letters"),
            ("x::rw-,g::r--,o::---", "u, g, m or o"),
            ("u::rw-,u::r--,g::r--,o::---", "twice"),
            ("u:nobody:r--,u::rw-,g::r--,m::r--,o::---", "no id"),
            ("u:rw-", "KIND:ID:PERMS"),
        ] {
            let e = Acl::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert_eq!(Acl::decode(&[1, 0, 0, 0]), None);
        assert_eq!(Acl::decode(&[2, 0, 0, 0, 9]), None);
    }
}
