//! The scenario syntax tree: what a `.ovl` file says, with spans and comments.
//!
//! Spans never take part in equality: two trees are equal when they say the
//! same thing, wherever it was written. Comments and blank lines are kept so
//! that the formatter can reprint a file without losing a word of it.

use serde::{Deserialize, Serialize};

use crate::text::Bytes;

/// A region of the source: byte offsets plus the 1-based line and column of `start`.
/// Serialised compactly as `"LINE:COL@START..END"`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub line: u32,
    pub col: u32,
}

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}:{}@{}..{}", self.line, self.col, self.start, self.end))
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let bad = || serde::de::Error::custom(format!("not a span: {s:?}"));
        let (lc, range) = s.split_once('@').ok_or_else(bad)?;
        let (line, col) = lc.split_once(':').ok_or_else(bad)?;
        let (start, end) = range.split_once("..").ok_or_else(bad)?;
        Ok(Span {
            line: line.parse().map_err(|_| bad())?,
            col: col.parse().map_err(|_| bad())?,
            start: start.parse().map_err(|_| bad())?,
            end: end.parse().map_err(|_| bad())?,
        })
    }
}

impl PartialEq for Span {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// A value and where it was written.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spanned<T> {
    pub node: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(node: T, span: Span) -> Self {
        Self { node, span }
    }
}

/// What sits between two items of a block: blank lines and comment lines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trivia {
    Blank,
    Comment(String),
}

/// One line-level item of a block (a statement, a layer entry, a check), with its comments.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Item<T> {
    /// Blank lines and comment lines before the item.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub before: Vec<Trivia>,
    pub node: T,
    /// A comment on the item's own (last) line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub span: Span,
}

/// A sequence of items, with the comments that close it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Block<T> {
    pub items: Vec<Item<T>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub end: Vec<Trivia>,
}

impl<T> Default for Block<T> {
    fn default() -> Self {
        Self { items: Vec::new(), end: Vec::new() }
    }
}

/// One scenario file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    /// The path under `scenarios/` without extension (`lab/copy-up`).
    pub id: String,
    /// The file as the user named it, for messages.
    pub file: String,
    /// Every statement, header first, in source order.
    pub body: Block<Stmt>,
}

pub type Name = Spanned<String>;
pub type PathRef = Spanned<String>;
pub type Text = Spanned<Bytes>;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stmt {
    Scenario(Text),
    About(Text),
    Tags(Vec<Name>),
    Requires(Vec<Cond>),
    Vary(Vec<VaryAxis>),
    /// `param NAME=V1|V2`: instances like `vary`, passed to no mount (a layout).
    Param(Vec<VaryAxis>),
    Backing(Spanned<Backing>),
    Layer(Layer),
    /// `filesystem NAME KIND [size SIZE]`.
    Filesystem(Filesystem),
    Mount(Box<Mount>),
    /// `umount [MOUNT]`.
    Umount(Umount),
    Remount(Option<Outcome>),
    /// `reconfigure with OPT,...`: options changed on the mounted overlay.
    Reconfigure(Reconfigure),
    If(IfStmt),
    As(AsBlock),
    /// `on MOUNT { ... }`: operations and expectations against a named mount.
    On(OnBlock),
    Expect(Expect),
    ExpectLayer(Block<TarEntry>),
    /// `expect mountinfo [on MOUNT] { [not] contains "..." }`.
    ExpectMountinfo(MountinfoExpect),
    Op(OpStmt),
    /// `edit layer NAME { ... }` / `edit upper { ... }`.
    Edit(Edit),
}

/// Changes made with raw calls on a layer's or the upper's directory, never
/// through the overlay, mounted or not.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Edit {
    /// The layer; `None` for an upper.
    pub layer: Option<Name>,
    /// `edit upper NAME`: a named upper (`None` with `layer` `None`: the default upper).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<Name>,
    /// `edit work [NAME]`: a work directory (the name `""`: the default one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work: Option<Name>,
    pub items: Block<EditItem>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EditItem {
    /// A layer entry: created, or replacing what is at its path.
    Entry(Entry),
    /// `remove PATH`: recursively.
    Remove(PathRef),
    /// `xattr PATH NAME="v"`: set, raw (no dialect translation).
    Xattr { path: PathRef, name: Name, value: Text },
    /// `no xattr PATH NAME`: removed, raw.
    NoXattr { path: PathRef, name: Name },
    /// `attrs PATH +i -a ...`: inode flags of what is there changed (FS_IOC_SETFLAGS).
    Attrs { path: PathRef, changes: Spanned<Vec<AttrChange>> },
}

impl Stmt {
    /// The statement's keyword, for messages.
    pub fn keyword(&self) -> &'static str {
        match self {
            Stmt::Scenario(_) => "scenario",
            Stmt::About(_) => "about",
            Stmt::Tags(_) => "tags",
            Stmt::Requires(_) => "requires",
            Stmt::Vary(_) => "vary",
            Stmt::Param(_) => "param",
            Stmt::Backing(_) => "backing",
            Stmt::Layer(_) => "layer",
            Stmt::Filesystem(_) => "filesystem",
            Stmt::Mount(_) => "mount",
            Stmt::Umount(_) => "umount",
            Stmt::Remount(_) => "remount",
            Stmt::Reconfigure(_) => "reconfigure",
            Stmt::If(_) => "if",
            Stmt::As(_) => "as",
            Stmt::On(_) => "on",
            Stmt::Expect(_) | Stmt::ExpectLayer(_) | Stmt::ExpectMountinfo(_) => "expect",
            Stmt::Op(op) => op.op.keyword(),
            Stmt::Edit(_) => "edit",
        }
    }

    /// Header statements, in the order they must appear.
    pub fn header_rank(&self) -> Option<u8> {
        Some(match self {
            Stmt::Scenario(_) => 0,
            Stmt::About(_) => 1,
            Stmt::Tags(_) => 2,
            Stmt::Requires(_) => 3,
            Stmt::Vary(_) => 4,
            Stmt::Param(_) => 5,
            Stmt::Backing(_) => 6,
            _ => return None,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backing {
    Tmpfs,
    Ext4,
    Xfs,
    Btrfs,
}

impl Backing {
    pub const ALL: [Backing; 4] = [Backing::Tmpfs, Backing::Ext4, Backing::Xfs, Backing::Btrfs];
    pub fn name(self) -> &'static str {
        match self {
            Backing::Tmpfs => "tmpfs",
            Backing::Ext4 => "ext4",
            Backing::Xfs => "xfs",
            Backing::Btrfs => "btrfs",
        }
    }
}

// ------------------------------------------------------------------ conditions

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CmpOp {
    Lt,
    Le,
    Eq,
    Ne,
    Ge,
    Gt,
}

impl CmpOp {
    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Eq => "==",
            CmpOp::Ne => "!=",
            CmpOp::Ge => ">=",
            CmpOp::Gt => ">",
        }
    }
    pub fn holds(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CmpOp::Lt => ord == Less,
            CmpOp::Le => ord != Greater,
            CmpOp::Eq => ord == Equal,
            CmpOp::Ne => ord != Equal,
            CmpOp::Ge => ord != Less,
            CmpOp::Gt => ord == Greater,
        }
    }
}

/// A kernel version such as `6.7.3`; missing parts compare as 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version(pub Vec<u32>);

impl Version {
    pub fn parts(&self) -> [u32; 3] {
        let mut p = [0; 3];
        for (i, v) in self.0.iter().take(3).enumerate() {
            p[i] = *v;
        }
        p
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s: Vec<String> = self.0.iter().map(u32::to_string).collect();
        f.write_str(&s.join("."))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Driver {
    Kernel,
    Rootless,
    Fuse,
}

impl Driver {
    pub const ALL: [Driver; 3] = [Driver::Kernel, Driver::Rootless, Driver::Fuse];
    pub fn name(self) -> &'static str {
        match self {
            Driver::Kernel => "kernel",
            Driver::Rootless => "rootless",
            Driver::Fuse => "fuse",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cond {
    Kernel {
        op: CmpOp,
        version: Spanned<Version>,
    },
    Driver {
        equal: bool,
        driver: Spanned<Driver>,
    },
    Option(MountOpt),
    /// `param NAME=V`: the instance's layout parameter.
    Param(MountOpt),
    Not(Box<Cond>),
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
}

/// One `NAME=V1|V2` of a `vary` statement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VaryAxis {
    pub name: Name,
    pub values: Vec<Name>,
}

// ------------------------------------------------------------------ layers

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Layer {
    pub name: Name,
    /// `layer NAME on FS`: the layer's directory is on the filesystem FS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<Name>,
    pub source: LayerSource,
}

/// `filesystem NAME KIND [size SIZE]`: a filesystem of its own for layers
/// and uppers (`layer NAME on FS`, `mount ... upper NAME on FS`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Filesystem {
    pub name: Name,
    pub kind: Spanned<FsKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Spanned<Size>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsKind {
    Tmpfs,
    Ext4,
    Xfs,
    Btrfs,
    Squashfs,
    Erofs,
}

impl FsKind {
    /// Images packed from their layers and mounted read-only (squashfs, erofs).
    pub fn read_only(self) -> bool {
        matches!(self, FsKind::Squashfs | FsKind::Erofs)
    }

    /// Filesystems made on a disk image (ext4, xfs, btrfs): VM targets only.
    pub fn disk(self) -> bool {
        matches!(self, FsKind::Ext4 | FsKind::Xfs | FsKind::Btrfs)
    }

    pub const ALL: [FsKind; 6] =
        [FsKind::Tmpfs, FsKind::Ext4, FsKind::Xfs, FsKind::Btrfs, FsKind::Squashfs, FsKind::Erofs];
    pub fn name(self) -> &'static str {
        match self {
            FsKind::Tmpfs => "tmpfs",
            FsKind::Ext4 => "ext4",
            FsKind::Xfs => "xfs",
            FsKind::Btrfs => "btrfs",
            FsKind::Squashfs => "squashfs",
            FsKind::Erofs => "erofs",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerSource {
    Entries(Block<Entry>),
    /// An OCI layer tarball, relative to the scenario file.
    Tar(Spanned<String>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub path: PathRef,
    pub kind: EntryKind,
    #[serde(default, skip_serializing_if = "Attrs::is_empty")]
    pub attrs: Attrs,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    File {
        content: Option<Text>,
        size: Option<Spanned<Size>>,
        /// `sparse`: the size with no data blocks (a hole).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        sparse: bool,
        /// `verity`: fs-verity enabled on the file once written.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        verity: bool,
    },
    Dir {
        opaque: bool,
    },
    Symlink {
        target: Text,
    },
    Hardlink {
        target: PathRef,
    },
    Fifo,
    Device {
        kind: DevKind,
        dev: Spanned<DevNum>,
    },
    Whiteout,
    /// An AF_UNIX socket bound in place.
    Socket,
}

impl EntryKind {
    pub fn keyword(&self) -> &'static str {
        match self {
            EntryKind::File { .. } => "file",
            EntryKind::Dir { .. } => "dir",
            EntryKind::Symlink { .. } => "symlink",
            EntryKind::Hardlink { .. } => "hardlink",
            EntryKind::Fifo => "fifo",
            EntryKind::Device { .. } => "device",
            EntryKind::Whiteout => "whiteout",
            EntryKind::Socket => "socket",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Attrs {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Spanned<Mode>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Spanned<Owner>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<Xattr>,
    /// `attrs +i +a`: inode flags set once the layer is built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<Spanned<Vec<AttrChange>>>,
}

impl Attrs {
    pub fn is_empty(&self) -> bool {
        self.mode.is_none() && self.owner.is_none() && self.xattrs.is_empty() && self.flags.is_none()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Xattr {
    pub name: Name,
    pub value: Text,
}

/// Permission bits, `0` to `07777`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mode(pub u32);

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0{:03o}", self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl std::fmt::Display for Owner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.uid, self.gid)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DevKind {
    Char,
    Block,
}

impl DevKind {
    pub fn name(self) -> &'static str {
        match self {
            DevKind::Char => "char",
            DevKind::Block => "block",
        }
    }
}

/// Device numbers, major up to 4095 and minor up to 1048575 (Linux's 12/20 bits).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevNum {
    pub major: u32,
    pub minor: u32,
}

impl std::fmt::Display for DevNum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SizeUnit {
    None,
    B,
    KiB,
    MiB,
    GiB,
}

impl SizeUnit {
    pub fn suffix(self) -> &'static str {
        match self {
            SizeUnit::None => "",
            SizeUnit::B => "B",
            SizeUnit::KiB => "KiB",
            SizeUnit::MiB => "MiB",
            SizeUnit::GiB => "GiB",
        }
    }
    pub fn factor(self) -> u64 {
        match self {
            SizeUnit::None | SizeUnit::B => 1,
            SizeUnit::KiB => 1 << 10,
            SizeUnit::MiB => 1 << 20,
            SizeUnit::GiB => 1 << 30,
        }
    }
}

/// A size as written (`4KiB`) and its value in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Size {
    pub count: u64,
    pub unit: SizeUnit,
    pub bytes: u64,
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.count, self.unit.suffix())
    }
}

// ------------------------------------------------------------------ mounts

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mount {
    /// Lower layers, uppermost first.
    pub lowers: Vec<DirRef>,
    /// Data-only lower layers (after `::`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<DirRef>,
    /// `upper NAME` (or `upper MOUNT:/path`): a named upper directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<DirRef>,
    /// `upper NAME on FS`: a new named upper (and its work directory) on FS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_on: Option<Name>,
    /// `work NAME` (or `work MOUNT:/path`): a named work directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work: Option<DirRef>,
    /// `as MOUNT`: the mount's name, for `on`, `umount MOUNT` and `MOUNT:/path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Name>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<MountOpt>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub readonly: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_from: Option<Name>,
    /// `options "RAW"`: appended to the option string, which goes to mount(2) unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<Text>,
    /// `driver D`: this mount's driver instead of the target's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<Spanned<Driver>>,
    /// How the layers reach the kernel (`via string|append|fd|legacy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<Via>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Outcome>,
}

/// A directory a mount takes as a layer, an upper or a work directory: a
/// declared layer or a named upper (work) directory by name, or a directory
/// inside another mounted overlay (`m1:/u`, a nested overlay), a layer or a
/// named upper (`base:/sub`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DirRef {
    Name(Name),
    InMount { mount: Name, path: PathRef },
}

/// A layer's name as written: bare when it is an identifier, quoted otherwise.
pub fn layer_name_text(name: &str) -> String {
    let mut c = name.chars();
    let ident = c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '-');
    if ident {
        name.to_string()
    } else {
        crate::text::quote(name.as_bytes())
    }
}

impl DirRef {
    /// As written: `base`, `"a:b"`, `m1:/u`.
    pub fn text(&self) -> String {
        match self {
            DirRef::Name(n) => layer_name_text(&n.node),
            DirRef::InMount { mount, path } => format!("{}:{}", layer_name_text(&mount.node), crate::fmt::path(path)),
        }
    }

    pub fn span(&self) -> Span {
        match self {
            DirRef::Name(n) => n.span,
            DirRef::InMount { mount, path } => Span { end: path.span.end, ..mount.span },
        }
    }

    /// The name, when it is one (not a path inside a mount).
    pub fn name(&self) -> Option<&Name> {
        match self {
            DirRef::Name(n) => Some(n),
            DirRef::InMount { .. } => None,
        }
    }
}

/// `reconfigure with OPT,...`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reconfigure {
    pub options: Vec<MountOpt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Outcome>,
}

/// `expect mountinfo [on MOUNT] { ... }`: the overlay's line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MountinfoExpect {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<Name>,
    pub checks: Block<MountinfoCheck>,
}

/// `contains "text"` / `not contains "text"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MountinfoCheck {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub negated: bool,
    pub text: Text,
}

/// `umount [MOUNT]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Umount {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mount: Option<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Outcome>,
}

/// How a mount passes its layers: `lowerdir=a:b` through fsconfig
/// (`string`), `lowerdir+`/`datadir+` one by one (`append`, 6.8), each layer
/// as a descriptor (`fd`, FSCONFIG_SET_FD, 6.13), or mount(2) (`legacy`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    String,
    Append,
    Fd,
    Legacy,
}

impl Via {
    pub fn name(self) -> &'static str {
        match self {
            Via::String => "string",
            Via::Append => "append",
            Via::Fd => "fd",
            Via::Legacy => "legacy",
        }
    }
}

/// A mount option: `index=on`, `userxattr`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MountOpt {
    pub name: String,
    pub value: Option<String>,
    pub span: Span,
}

impl std::fmt::Display for MountOpt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}={}", self.name, v),
            None => f.write_str(&self.name),
        }
    }
}

// ------------------------------------------------------------------ results

/// The `=> RESULT` of a statement.
pub type Outcome = Spanned<Expected>;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expected {
    Ok,
    /// A Linux errno name (`ENOENT`), checked against [`crate::errno`].
    Errno(String),
    Text(Bytes),
    List(Vec<Bytes>),
    /// `=> error`: any errno.
    AnyError,
    /// `=> any`: whatever happens, success or any errno, recorded and never
    /// a failure (a probe: what a kernel does is the finding, as in the
    /// support matrix's probes).
    Any,
    /// `=> EXDEV|ENOTEMPTY`: any of these errnos.
    OneOf(Vec<String>),
    /// `=> ?`: an open question. A run records the result and never fails
    /// on it (as `any`); `ovlc bless` writes the result in its place, and
    /// `ovlc grade` grades a student's answer written there.
    Open,
}

// ------------------------------------------------------------------ control

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IfStmt {
    /// `if C {..} else if C {..}`: each condition with its block, in order.
    pub branches: Vec<(Cond, Block<Stmt>)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otherwise: Option<Block<Stmt>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AsBlock {
    pub owner: Spanned<Owner>,
    /// `as UID:GID in userns`: the block runs in a child process in a new
    /// user namespace whose root is UID:GID (not with fsuid/fsgid).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub userns: bool,
    /// Operations only (the grammar allows nothing else).
    pub body: Block<Stmt>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OnBlock {
    pub mount: Name,
    /// Operations, expectations, `if` and `as` blocks.
    pub body: Block<Stmt>,
}

// ------------------------------------------------------------------ operations

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpStmt {
    pub op: Op,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Outcome>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RenameFlag {
    Noreplace,
    Exchange,
    Whiteout,
}

impl RenameFlag {
    pub fn name(self) -> &'static str {
        match self {
            RenameFlag::Noreplace => "noreplace",
            RenameFlag::Exchange => "exchange",
            RenameFlag::Whiteout => "whiteout",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Fifo,
    /// A socket inode (`mknod S_IFSOCK`), which no layer tar can hold.
    Socket,
    Char(DevNum),
    Block(DevNum),
}

/// A flag of `open` (`rdonly`, `wronly|creat`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenFlag {
    Rdonly,
    Wronly,
    Rdwr,
    Creat,
    Excl,
    Trunc,
    Append,
    Directory,
    Nofollow,
    Noatime,
    Path,
    Tmpfile,
}

impl OpenFlag {
    pub const ALL: [OpenFlag; 12] = [
        OpenFlag::Rdonly,
        OpenFlag::Wronly,
        OpenFlag::Rdwr,
        OpenFlag::Creat,
        OpenFlag::Excl,
        OpenFlag::Trunc,
        OpenFlag::Append,
        OpenFlag::Directory,
        OpenFlag::Nofollow,
        OpenFlag::Noatime,
        OpenFlag::Path,
        OpenFlag::Tmpfile,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpenFlag::Rdonly => "rdonly",
            OpenFlag::Wronly => "wronly",
            OpenFlag::Rdwr => "rdwr",
            OpenFlag::Creat => "creat",
            OpenFlag::Excl => "excl",
            OpenFlag::Trunc => "trunc",
            OpenFlag::Append => "append",
            OpenFlag::Directory => "directory",
            OpenFlag::Nofollow => "nofollow",
            OpenFlag::Noatime => "noatime",
            OpenFlag::Path => "path",
            OpenFlag::Tmpfile => "tmpfile",
        }
    }

    pub fn parse(s: &str) -> Option<OpenFlag> {
        OpenFlag::ALL.into_iter().find(|f| f.name() == s)
    }
}

/// A field of a remembered name (`stat`, `lstat`, `fstat`, `statfs`, `dirent`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatField {
    Ino,
    Dev,
    Nlink,
    Mode,
    Uid,
    Gid,
    Size,
    Blocks,
    Atime,
    Mtime,
    Ctime,
    /// `statfs`: f_type; `dirent`: d_type.
    Type,
    Fsid,
    /// `dirent`: d_ino (also `ino`).
    DIno,
}

impl StatField {
    pub const ALL: [StatField; 14] = [
        StatField::Ino,
        StatField::Dev,
        StatField::Nlink,
        StatField::Mode,
        StatField::Uid,
        StatField::Gid,
        StatField::Size,
        StatField::Blocks,
        StatField::Atime,
        StatField::Mtime,
        StatField::Ctime,
        StatField::Type,
        StatField::Fsid,
        StatField::DIno,
    ];

    pub fn name(self) -> &'static str {
        match self {
            StatField::Ino => "ino",
            StatField::Dev => "dev",
            StatField::Nlink => "nlink",
            StatField::Mode => "mode",
            StatField::Uid => "uid",
            StatField::Gid => "gid",
            StatField::Size => "size",
            StatField::Blocks => "blocks",
            StatField::Atime => "atime",
            StatField::Mtime => "mtime",
            StatField::Ctime => "ctime",
            StatField::Type => "type",
            StatField::Fsid => "fsid",
            StatField::DIno => "d_ino",
        }
    }

    pub fn parse(s: &str) -> Option<StatField> {
        StatField::ALL.into_iter().find(|f| f.name() == s)
    }

    /// Is this field a time (for `newer` and `older`)?
    pub fn is_time(self) -> bool {
        matches!(self, StatField::Atime | StatField::Mtime | StatField::Ctime)
    }
}

/// How `compare` relates a path (or name) to a remembered name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareHow {
    Same,
    Different,
    Newer,
    Older,
}

impl CompareHow {
    pub fn name(self) -> &'static str {
        match self {
            CompareHow::Same => "same",
            CompareHow::Different => "different",
            CompareHow::Newer => "newer",
            CompareHow::Older => "older",
        }
    }
}

/// What `compare` examines: a path now, or another remembered name (`@NAME`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Subject {
    Path(PathRef),
    Name(Name),
    /// `LAYER:/path`: a path in a layer's (or named upper's) own directory.
    Layer {
        layer: Name,
        path: PathRef,
    },
}

/// An inode flag of `chattr` (FS_IOC_SETFLAGS), by chattr(1)'s letter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InodeFlag {
    /// `i`: FS_IMMUTABLE_FL.
    Immutable,
    /// `a`: FS_APPEND_FL.
    Append,
    /// `A`: FS_NOATIME_FL.
    NoAtime,
    /// `S`: FS_SYNC_FL.
    Sync,
    /// `d`: FS_NODUMP_FL.
    NoDump,
}

impl InodeFlag {
    pub const ALL: [InodeFlag; 5] =
        [InodeFlag::Immutable, InodeFlag::Append, InodeFlag::NoAtime, InodeFlag::Sync, InodeFlag::NoDump];
    pub fn letter(self) -> char {
        match self {
            InodeFlag::Immutable => 'i',
            InodeFlag::Append => 'a',
            InodeFlag::NoAtime => 'A',
            InodeFlag::Sync => 'S',
            InodeFlag::NoDump => 'd',
        }
    }
    /// The FS_*_FL bit.
    pub fn bit(self) -> u32 {
        match self {
            InodeFlag::Immutable => 0x10,
            InodeFlag::Append => 0x20,
            InodeFlag::NoAtime => 0x80,
            InodeFlag::Sync => 0x8,
            InodeFlag::NoDump => 0x40,
        }
    }
}

/// `+i` (set) or `-i` (clear).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttrChange {
    pub set: bool,
    pub flag: InodeFlag,
}

impl std::fmt::Display for AttrChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", if self.set { '+' } else { '-' }, self.flag.letter())
    }
}

/// `fallocate F OFF LEN keep-size|punch-hole`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FallocMode {
    KeepSize,
    PunchHole,
}

impl FallocMode {
    pub fn name(self) -> &'static str {
        match self {
            FallocMode::KeepSize => "keep-size",
            FallocMode::PunchHole => "punch-hole",
        }
    }
}

/// `flock F sh|ex|un`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlockHow {
    Shared,
    Exclusive,
    Unlock,
}

impl FlockHow {
    pub fn name(self) -> &'static str {
        match self {
            FlockHow::Shared => "sh",
            FlockHow::Exclusive => "ex",
            FlockHow::Unlock => "un",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Write {
        path: PathRef,
        data: Text,
    },
    Append {
        path: PathRef,
        data: Text,
    },
    Create {
        path: PathRef,
    },
    Truncate {
        path: PathRef,
        size: Spanned<Size>,
    },
    Read {
        path: PathRef,
    },
    Readlink {
        path: PathRef,
    },
    /// `measure PATH` / `measure LAYER:/path`: the fs-verity digest.
    Measure {
        path: PathRef,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        layer: Option<Name>,
    },
    Readdir {
        path: PathRef,
    },
    Mkdir {
        path: PathRef,
        mode: Option<Spanned<Mode>>,
    },
    Rmdir {
        path: PathRef,
    },
    Unlink {
        path: PathRef,
    },
    Rename {
        from: PathRef,
        to: PathRef,
        flag: Option<RenameFlag>,
    },
    Link {
        from: PathRef,
        to: PathRef,
    },
    Symlink {
        path: PathRef,
        target: Text,
    },
    Mknod {
        path: PathRef,
        node: Spanned<NodeKind>,
    },
    Chmod {
        path: PathRef,
        mode: Spanned<Mode>,
    },
    Chown {
        path: PathRef,
        owner: Spanned<Owner>,
    },
    Touch {
        path: PathRef,
    },
    Setxattr {
        path: PathRef,
        name: Name,
        value: Text,
    },
    Removexattr {
        path: PathRef,
        name: Name,
    },
    Getxattr {
        path: PathRef,
        name: Name,
    },
    Stat {
        path: PathRef,
        name: Name,
        /// `stat LAYER:/path`: the path in a layer's (or named upper's) own directory.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        layer: Option<Name>,
    },
    SameInode {
        path: PathRef,
        name: Name,
    },
    DropCaches,
    Sync,
    /// `open PATH as F FLAGS [mode M]`: binds the descriptor `fd`.
    Open {
        path: PathRef,
        fd: Name,
        flags: Spanned<Vec<OpenFlag>>,
        mode: Option<Spanned<Mode>>,
    },
    /// `chattr PATH +i -a ...`: FS_IOC_GETFLAGS, then FS_IOC_SETFLAGS with the changes.
    Chattr {
        path: PathRef,
        changes: Spanned<Vec<AttrChange>>,
    },
    /// `chattr F +i ...`: the same through a descriptor.
    FdChattr {
        fd: Name,
        changes: Spanned<Vec<AttrChange>>,
    },
    /// `setacl PATH [default] "ACL"`: the access (or default) POSIX ACL, as its xattr.
    Setacl {
        path: PathRef,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        default: bool,
        acl: Spanned<crate::acl::Acl>,
    },
    /// `sleep 10ms` / `sleep 1s`: a pause of that many milliseconds (at most 10 s).
    Sleep {
        millis: Spanned<u64>,
    },
    /// `handle PATH as H`: name_to_handle_at; remembers the file handle as H.
    Handle {
        path: PathRef,
        name: Name,
    },
    /// `open-handle H as F FLAGS`: open_by_handle_at on the overlay; binds F.
    OpenHandle {
        handle: Name,
        fd: Name,
        flags: Spanned<Vec<OpenFlag>>,
    },
    /// `write F "data" [at OFFSET]`.
    FdWrite {
        fd: Name,
        data: Text,
        at: Option<Spanned<Size>>,
    },
    /// `read F [SIZE] [at OFFSET]`.
    FdRead {
        fd: Name,
        size: Option<Spanned<Size>>,
        at: Option<Spanned<Size>>,
    },
    /// `readdir F [max N]`.
    FdReaddir {
        fd: Name,
        max: Option<Spanned<u64>>,
    },
    Rewind {
        fd: Name,
    },
    Ftruncate {
        fd: Name,
        size: Spanned<Size>,
    },
    Fsync {
        fd: Name,
    },
    Fdatasync {
        fd: Name,
    },
    Fchmod {
        fd: Name,
        mode: Spanned<Mode>,
    },
    Fchown {
        fd: Name,
        owner: Spanned<Owner>,
    },
    Fsetxattr {
        fd: Name,
        name: Name,
        value: Text,
    },
    Fgetxattr {
        fd: Name,
        name: Name,
    },
    /// `fstat F as NAME`: remembers the inode like `stat`.
    Fstat {
        fd: Name,
        name: Name,
    },
    Fallocate {
        fd: Name,
        offset: Spanned<Size>,
        len: Spanned<Size>,
        mode: Option<FallocMode>,
    },
    Flock {
        fd: Name,
        how: FlockHow,
        nonblock: bool,
    },
    /// `mmap F write "data" at OFFSET`: MAP_SHARED, written, msync'ed, unmapped.
    MmapWrite {
        fd: Name,
        data: Text,
        at: Spanned<Size>,
    },
    /// `mmap F read SIZE at OFFSET`.
    MmapRead {
        fd: Name,
        size: Spanned<Size>,
        at: Spanned<Size>,
    },
    Close {
        fd: Name,
    },
    /// `lstat PATH as NAME`: like `stat`, without following a final symlink.
    Lstat {
        path: PathRef,
        name: Name,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        layer: Option<Name>,
    },
    /// `statfs PATH as NAME`: remembers the file system's type and fsid.
    Statfs {
        path: PathRef,
        name: Name,
    },
    /// `dirent DIR ENTRY as NAME`: the d_ino and d_type getdents64 gives for ENTRY.
    Dirent {
        dir: PathRef,
        entry: Text,
        name: Name,
    },
    /// `compare PATH NAME FIELD,... same|different|newer|older`.
    Compare {
        subject: Subject,
        name: Name,
        fields: Spanned<Vec<StatField>>,
        how: CompareHow,
    },
    /// `value NAME FIELD OP N`.
    Value {
        name: Name,
        field: Spanned<StatField>,
        op: CmpOp,
        value: Spanned<u64>,
    },
    /// `listxattr PATH => [..]`.
    Listxattr {
        path: PathRef,
    },
}

impl Op {
    pub fn keyword(&self) -> &'static str {
        match self {
            Op::Write { .. } => "write",
            Op::Append { .. } => "append",
            Op::Create { .. } => "create",
            Op::Truncate { .. } => "truncate",
            Op::Read { .. } => "read",
            Op::Readlink { .. } => "readlink",
            Op::Measure { .. } => "measure",
            Op::Readdir { .. } => "readdir",
            Op::Mkdir { .. } => "mkdir",
            Op::Rmdir { .. } => "rmdir",
            Op::Unlink { .. } => "unlink",
            Op::Rename { .. } => "rename",
            Op::Link { .. } => "link",
            Op::Symlink { .. } => "symlink",
            Op::Mknod { .. } => "mknod",
            Op::Chmod { .. } => "chmod",
            Op::Chown { .. } => "chown",
            Op::Touch { .. } => "touch",
            Op::Setxattr { .. } => "setxattr",
            Op::Removexattr { .. } => "removexattr",
            Op::Getxattr { .. } => "getxattr",
            Op::Stat { .. } => "stat",
            Op::Handle { .. } => "handle",
            Op::Chattr { .. } | Op::FdChattr { .. } => "chattr",
            Op::Setacl { .. } => "setacl",
            Op::Sleep { .. } => "sleep",
            Op::OpenHandle { .. } => "open-handle",
            Op::SameInode { .. } => "same-inode",
            Op::DropCaches => "drop-caches",
            Op::Sync => "sync",
            Op::Open { .. } => "open",
            Op::FdWrite { .. } => "write",
            Op::FdRead { .. } => "read",
            Op::FdReaddir { .. } => "readdir",
            Op::Rewind { .. } => "rewind",
            Op::Ftruncate { .. } => "ftruncate",
            Op::Fsync { .. } => "fsync",
            Op::Fdatasync { .. } => "fdatasync",
            Op::Fchmod { .. } => "fchmod",
            Op::Fchown { .. } => "fchown",
            Op::Fsetxattr { .. } => "fsetxattr",
            Op::Fgetxattr { .. } => "fgetxattr",
            Op::Fstat { .. } => "fstat",
            Op::Fallocate { .. } => "fallocate",
            Op::Flock { .. } => "flock",
            Op::MmapWrite { .. } | Op::MmapRead { .. } => "mmap",
            Op::Close { .. } => "close",
            Op::Lstat { .. } => "lstat",
            Op::Statfs { .. } => "statfs",
            Op::Dirent { .. } => "dirent",
            Op::Compare { .. } => "compare",
            Op::Value { .. } => "value",
            Op::Listxattr { .. } => "listxattr",
        }
    }

    /// Does the operation act on the mounted overlay? Operations on a
    /// descriptor, `value`, `compare @NAME`, and `sync` and `drop-caches`
    /// (the whole kernel's) need no mount.
    pub fn needs_mount(&self) -> bool {
        !(self.fd().is_some()
            || self.layer().is_some()
            || matches!(
                self,
                Op::Value { .. }
                    | Op::Sleep { .. }
                    | Op::Compare { subject: Subject::Name(_), .. }
                    | Op::Sync
                    | Op::DropCaches
            ))
    }

    /// The layer (or named upper) whose own directory the operation looks
    /// into (`stat LAYER:/path`, `compare LAYER:/path ...`).
    pub fn layer(&self) -> Option<&Name> {
        match self {
            Op::Stat { layer, .. } | Op::Lstat { layer, .. } | Op::Measure { layer, .. } => layer.as_ref(),
            Op::Compare { subject: Subject::Layer { layer, .. }, .. } => Some(layer),
            _ => None,
        }
    }

    /// The descriptor an operation acts through (not the one `open` binds).
    pub fn fd(&self) -> Option<&Name> {
        match self {
            Op::FdWrite { fd, .. }
            | Op::FdRead { fd, .. }
            | Op::FdReaddir { fd, .. }
            | Op::Rewind { fd }
            | Op::Ftruncate { fd, .. }
            | Op::Fsync { fd }
            | Op::Fdatasync { fd }
            | Op::Fchmod { fd, .. }
            | Op::Fchown { fd, .. }
            | Op::Fsetxattr { fd, .. }
            | Op::Fgetxattr { fd, .. }
            | Op::Fstat { fd, .. }
            | Op::Fallocate { fd, .. }
            | Op::Flock { fd, .. }
            | Op::MmapWrite { fd, .. }
            | Op::MmapRead { fd, .. }
            | Op::FdChattr { fd, .. }
            | Op::Close { fd } => Some(fd),
            _ => None,
        }
    }

    /// Every path the operation names.
    pub fn paths(&self) -> Vec<&PathRef> {
        match self {
            Op::Write { path, .. }
            | Op::Append { path, .. }
            | Op::Create { path }
            | Op::Truncate { path, .. }
            | Op::Read { path }
            | Op::Readlink { path }
            | Op::Measure { path, .. }
            | Op::Readdir { path }
            | Op::Mkdir { path, .. }
            | Op::Rmdir { path }
            | Op::Unlink { path }
            | Op::Symlink { path, .. }
            | Op::Mknod { path, .. }
            | Op::Chmod { path, .. }
            | Op::Chown { path, .. }
            | Op::Touch { path }
            | Op::Setxattr { path, .. }
            | Op::Removexattr { path, .. }
            | Op::Getxattr { path, .. }
            | Op::Stat { path, .. }
            | Op::Handle { path, .. }
            | Op::Chattr { path, .. }
            | Op::Setacl { path, .. }
            | Op::SameInode { path, .. }
            | Op::Open { path, .. }
            | Op::Lstat { path, .. }
            | Op::Statfs { path, .. }
            | Op::Listxattr { path }
            | Op::Dirent { dir: path, .. }
            | Op::Compare { subject: Subject::Path(path) | Subject::Layer { path, .. }, .. } => vec![path],
            Op::Rename { from, to, .. } | Op::Link { from, to } => vec![from, to],
            _ => vec![],
        }
    }
}

// ------------------------------------------------------------------ expectations

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TreeTarget {
    Upper,
    Merged,
    /// A work directory (with its `work/` and `index/`).
    Work,
}

impl TreeTarget {
    pub fn name(self) -> &'static str {
        match self {
            TreeTarget::Upper => "upper",
            TreeTarget::Merged => "merged",
            TreeTarget::Work => "work",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Expect {
    pub target: TreeTarget,
    /// `expect upper NAME`, `expect work NAME`, `expect merged on MOUNT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Name>,
    /// `expect upper [NAME] raw`: names and xattrs as on disk, undecoded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub raw: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exactly: bool,
    /// `expect upper ?`: no block, an open question (`checks` is empty).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub open: bool,
    pub checks: Block<Check>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    File {
        path: PathRef,
        content: Option<Text>,
        size: Option<Spanned<Size>>,
    },
    /// `opaque`: `Some(true)` for `opaque`, `Some(false)` for `not opaque`.
    Dir {
        path: PathRef,
        opaque: Option<bool>,
    },
    Symlink {
        path: PathRef,
        target: Option<Text>,
    },
    Fifo {
        path: PathRef,
    },
    Device {
        path: PathRef,
        kind: DevKind,
        dev: Spanned<DevNum>,
    },
    Whiteout {
        path: PathRef,
    },
    Absent {
        path: PathRef,
    },
    Xattr {
        path: PathRef,
        name: Name,
        value: Option<Text>,
    },
    NoXattr {
        path: PathRef,
        name: Name,
    },
    Metacopy {
        path: PathRef,
        /// `metacopy PATH "sha256:HEX"`: the fs-verity digest it records
        /// (`""`: none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        digest: Option<Text>,
    },
    Redirect {
        path: PathRef,
        target: Text,
    },
    Mode {
        path: PathRef,
        mode: Spanned<Mode>,
    },
    Owner {
        path: PathRef,
        owner: Spanned<Owner>,
    },
    Nlink {
        path: PathRef,
        count: Spanned<u64>,
    },
    /// `entries PATH N`: a directory has N entries (`.` and `..` aside).
    Entries {
        path: PathRef,
        count: Spanned<u64>,
    },
    /// `attrs PATH +i -a`: inode flags set (`+`) or clear (`-`).
    Attrs {
        path: PathRef,
        flags: Spanned<Vec<AttrChange>>,
    },
    /// `acl PATH [default] "ACL"`: the POSIX ACL is this one.
    Acl {
        path: PathRef,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        default: bool,
        acl: Spanned<crate::acl::Acl>,
    },
    /// `blocks PATH OP N`: st_blocks (512-byte units) against a number.
    Blocks {
        path: PathRef,
        op: CmpOp,
        count: Spanned<u64>,
    },
    /// `xattrs PATH [a, b]`: exactly these xattr names (as `listxattr` gives them).
    Xattrs {
        path: PathRef,
        names: Vec<Name>,
    },
}

impl Check {
    pub fn path(&self) -> &PathRef {
        match self {
            Check::File { path, .. }
            | Check::Dir { path, .. }
            | Check::Symlink { path, .. }
            | Check::Fifo { path }
            | Check::Device { path, .. }
            | Check::Whiteout { path }
            | Check::Absent { path }
            | Check::Xattr { path, .. }
            | Check::NoXattr { path, .. }
            | Check::Metacopy { path, .. }
            | Check::Redirect { path, .. }
            | Check::Mode { path, .. }
            | Check::Owner { path, .. }
            | Check::Nlink { path, .. }
            | Check::Entries { path, .. }
            | Check::Blocks { path, .. }
            | Check::Attrs { path, .. }
            | Check::Acl { path, .. }
            | Check::Xattrs { path, .. } => path,
        }
    }
}

/// A member of an exported OCI layer, as `expect layer` names it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TarEntry {
    Dir { path: PathRef },
    File { path: PathRef, content: Option<Text> },
    Symlink { path: PathRef, target: Text },
    Hardlink { path: PathRef, target: PathRef },
    Whiteout { path: PathRef },
    Opaque { path: PathRef },
}

impl TarEntry {
    pub fn path(&self) -> &PathRef {
        match self {
            TarEntry::Dir { path }
            | TarEntry::File { path, .. }
            | TarEntry::Symlink { path, .. }
            | TarEntry::Hardlink { path, .. }
            | TarEntry::Whiteout { path }
            | TarEntry::Opaque { path } => path,
        }
    }
}
