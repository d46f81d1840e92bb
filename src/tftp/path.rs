//! Turning a requested file name into a safe path relative to the served root.
//!
//! This is only the lexical half of the check; [`super::source::DirSource`] also resolves
//! symlinks and refuses anything that lands outside the root or is not a regular file.

use core::fmt;

/// A relative, `/`-separated path with no empty, `.` or `..` components.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SafePath(String);

impl SafePath {
    /// The path, for example `boot/x86_64/vmlinuz`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SafePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a requested name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// Nothing left after cleaning.
    Empty,
    /// Starts with `/` (or `\`).
    Absolute,
    /// Has a `..` component.
    ParentDir,
    /// Has a NUL or another control character.
    ControlChar,
}

impl fmt::Display for PathError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathError::Empty => "empty file name",
            PathError::Absolute => "absolute path refused",
            PathError::ParentDir => "'..' refused",
            PathError::ControlChar => "control character in file name",
        })
    }
}

impl std::error::Error for PathError {}

/// Cleans a requested name: backslashes (Windows-style PXE paths) become `/`, `.` and repeated
/// separators are dropped; absolute paths, `..` and control characters are refused.
pub fn sanitize(requested: &str) -> Result<SafePath, PathError> {
    if requested.chars().any(char::is_control) {
        return Err(PathError::ControlChar);
    }
    if requested.starts_with(['/', '\\']) {
        return Err(PathError::Absolute);
    }
    let mut clean = String::with_capacity(requested.len());
    for part in requested.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => return Err(PathError::ParentDir),
            part => {
                if !clean.is_empty() {
                    clean.push('/');
                }
                clean.push_str(part);
            }
        }
    }
    if clean.is_empty() {
        return Err(PathError::Empty);
    }
    Ok(SafePath(clean))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_ordinary_and_windows_style_names() {
        for (raw, want) in [
            ("pxelinux.0", "pxelinux.0"),
            ("boot\\x86_64\\vmlinuz", "boot/x86_64/vmlinuz"),
            ("boot//./grub.cfg", "boot/grub.cfg"),
            ("dir/", "dir"),
            ("...", "..."),
            ("a..b", "a..b"),
        ] {
            assert_eq!(sanitize(raw).unwrap().as_str(), want, "{raw}");
        }
    }

    #[test]
    fn refuses_hostile_names() {
        for (raw, want) in [
            ("", PathError::Empty),
            ("./", PathError::Empty),
            ("/etc/passwd", PathError::Absolute),
            ("\\windows\\system32", PathError::Absolute),
            ("../etc/passwd", PathError::ParentDir),
            ("boot/../../etc/shadow", PathError::ParentDir),
            ("boot\\..\\..\\x", PathError::ParentDir),
            ("a\0b", PathError::ControlChar),
            ("a\nb", PathError::ControlChar),
        ] {
            assert_eq!(sanitize(raw), Err(want), "{raw:?}");
        }
    }
}
