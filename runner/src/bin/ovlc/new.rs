//! `ovlc new`: writes a starting scenario from a template, titled after its
//! file name, and says what to run next.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

use runner::error::{Error, Result, EXIT_PASS};
use runner::repro::sh_quote;
use runner::scaffold::{self, Template};

use crate::scenarios::write_atomically;

pub fn new(name: &Path, template: Template, dir: Option<&Path>, force: bool) -> Result<u8> {
    let path = file_path(name, dir)?;
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        let what = if parent.exists() { "is not a directory" } else { "does not exist" };
        return Err(Error::Usage(format!(
            "{}: the directory {} {what} (ovlc new creates no directories)",
            path.display(),
            parent.display()
        )));
    }
    let existing = std::fs::symlink_metadata(&path).ok();
    match &existing {
        Some(m) if m.is_dir() => {
            return Err(Error::Usage(format!("{} is a directory", path.display())));
        }
        Some(m) if m.file_type().is_symlink() => {
            return Err(Error::Usage(format!("{} is a symlink: not overwritten", path.display())));
        }
        Some(_) if !force => {
            return Err(Error::Usage(format!("{} exists: not overwritten (--force overwrites it)", path.display())));
        }
        _ => {}
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let title = scaffold::title_from_name(&stem);
    let text = scaffold::render(template, &title)?;
    if existing.is_some() {
        write_atomically(&path, text.as_bytes()).map_err(Error::io(&path))?;
    } else {
        write_new(&path, text.as_bytes())?;
    }

    let file = shell_path(&path);
    let id = dsl::scenario_id(&path, parent);
    println!("wrote {} \"{title}\" ({} template: {})", path.display(), template.name(), template.summary());
    println!("next:");
    println!("  ovlc check {file}");
    println!("  ovlc run --target host --snapshots update {file}   # the first run records snapshots/host/{id}.snap");
    println!("  ovlc run --target host {file}");
    Ok(EXIT_PASS)
}

/// NAME, under DIR when given, with `.ovl` appended when it lacks it.
fn file_path(name: &Path, dir: Option<&Path>) -> Result<PathBuf> {
    let Some(file_name) = name.file_name().filter(|_| !name.as_os_str().as_encoded_bytes().ends_with(b"/")) else {
        return Err(Error::Usage(format!(
            "{:?} names no file: give a name such as scenarios/lab/11-my-step",
            name.display().to_string()
        )));
    };
    if file_name.as_encoded_bytes().starts_with(b".") {
        return Err(Error::Usage(format!(
            "{:?}: a scenario's file name needs a name before `.ovl` (a hidden file is no scenario)",
            name.display().to_string()
        )));
    }
    if dir.is_some() && name.is_absolute() {
        return Err(Error::Usage(format!("{}: give --dir or an absolute NAME, not both", name.display())));
    }
    let mut file_name = OsString::from(file_name);
    if !file_name.as_encoded_bytes().ends_with(b".ovl") {
        file_name.push(".ovl");
    }
    let path = name.with_file_name(file_name);
    Ok(match dir {
        Some(d) => d.join(path),
        None => path,
    })
}

/// Creates the file, failing when it exists (it may have appeared since it was looked for).
fn write_new(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            Error::Usage(format!("{} exists: not overwritten (--force overwrites it)", path.display()))
        } else {
            Error::io(path)(e)
        }
    })?;
    f.write_all(bytes).map_err(Error::io(path))
}

/// The path as one word for sh, never read as an option.
fn shell_path(path: &Path) -> String {
    let p = path.display().to_string();
    sh_quote(&if p.starts_with('-') { format!("./{p}") } else { p })
}
