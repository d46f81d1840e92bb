//! A small command-line parser: `--name value`, `--name=value`, flags and positionals.
//! (A full parser crate would cost more binary size than the whole TFTP engine.)

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::str::FromStr;

/// A usage mistake: printed with the command's usage line, exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The arguments of one subcommand, consumed option by option.
#[derive(Debug)]
pub struct Args {
    items: VecDeque<String>,
}

impl Args {
    /// Wraps the arguments after the subcommand name.
    pub fn new(items: impl IntoIterator<Item = OsString>) -> Result<Self, UsageError> {
        let items = items
            .into_iter()
            .map(|a| {
                a.into_string()
                    .map_err(|a| UsageError(format!("argument {a:?} is not valid UTF-8")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Args { items })
    }

    /// Whether any of `names` was given (for `--help` and `--version`, checked first).
    pub fn has(&self, names: &[&str]) -> bool {
        self.items.iter().any(|a| names.contains(&a.as_str()))
    }

    /// Removes a flag (any of `names`); true if it was present.
    pub fn flag(&mut self, names: &[&str]) -> bool {
        let before = self.items.len();
        self.items.retain(|a| !names.contains(&a.as_str()));
        self.items.len() != before
    }

    /// Removes every occurrence of an option with a value (`--name V` or `--name=V`), in order,
    /// as (name, value) pairs.
    fn take_all(&mut self, names: &[&str]) -> Result<Vec<(String, String)>, UsageError> {
        let mut found = Vec::new();
        let mut i = 0;
        while i < self.items.len() {
            let item = &self.items[i];
            let inline = names.iter().find_map(|n| {
                item.strip_prefix(n)
                    .and_then(|rest| rest.strip_prefix('='))
                    .map(|v| (n.to_string(), v.to_string()))
            });
            if let Some(pair) = inline {
                found.push(pair);
                self.items.remove(i);
            } else if names.contains(&item.as_str()) {
                let name = item.clone();
                self.items.remove(i);
                let value = self
                    .items
                    .remove(i)
                    .ok_or_else(|| UsageError(format!("{name} needs a value")))?;
                found.push((name, value));
            } else {
                i += 1;
            }
        }
        Ok(found)
    }

    /// Removes an option with a value and parses the value. The last occurrence wins, so that
    /// later flags override earlier ones.
    pub fn value<T: FromStr>(&mut self, names: &[&str]) -> Result<Option<T>, UsageError>
    where
        T::Err: fmt::Display,
    {
        self.take_all(names)?
            .pop()
            .map(|(name, raw)| parse(&name, &raw))
            .transpose()
    }

    /// Removes every occurrence of a repeatable option and parses each value, in order.
    pub fn values<T: FromStr>(&mut self, names: &[&str]) -> Result<Vec<T>, UsageError>
    where
        T::Err: fmt::Display,
    {
        self.take_all(names)?
            .into_iter()
            .map(|(name, raw)| parse(&name, &raw))
            .collect()
    }

    /// Like [`Args::value`], but the option must be present.
    pub fn required<T: FromStr>(&mut self, names: &[&str]) -> Result<T, UsageError>
    where
        T::Err: fmt::Display,
    {
        self.value(names)?
            .ok_or_else(|| UsageError(format!("{} is required", names[names.len() - 1])))
    }

    /// Takes the next positional argument (call after all options are taken).
    pub fn positional(&mut self, what: &str) -> Result<String, UsageError> {
        match self.items.pop_front() {
            Some(a) if !a.starts_with('-') || a == "-" => Ok(a),
            Some(a) => Err(UsageError(format!("unknown option {a}"))),
            None => Err(UsageError(format!("missing {what}"))),
        }
    }

    /// Fails on anything left over.
    pub fn finish(self) -> Result<(), UsageError> {
        match self.items.front() {
            None => Ok(()),
            Some(a) if a.starts_with('-') => Err(UsageError(format!("unknown option {a}"))),
            Some(a) => Err(UsageError(format!("unexpected argument {a:?}"))),
        }
    }
}

/// An option's value, parsed; a mistake names the option and the value as given.
fn parse<T: FromStr>(name: &str, raw: &str) -> Result<T, UsageError>
where
    T::Err: fmt::Display,
{
    raw.parse()
        .map_err(|e| UsageError(format!("{name} {raw:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        Args::new(list.iter().map(OsString::from)).unwrap()
    }

    #[test]
    fn options_flags_and_positionals() {
        let mut a = args(&[
            "url",
            "--blksize",
            "1468",
            "--tsize",
            "-o=out",
            "--blksize=512",
        ]);
        assert!(a.flag(&["--tsize"]));
        assert!(!a.flag(&["--single-port"]));
        assert_eq!(a.value::<u16>(&["--blksize"]).unwrap(), Some(512));
        assert_eq!(
            a.value::<String>(&["-o", "--output"]).unwrap(),
            Some("out".into())
        );
        assert_eq!(a.positional("URL").unwrap(), "url");
        a.finish().unwrap();
        let mut a = args(&["--set", "a=1", "--set=b=2", "--set", "c=3"]);
        assert_eq!(
            a.values::<String>(&["--set"]).unwrap(),
            ["a=1", "b=2", "c=3"]
        );
        let mut a = args(&["--port", "69", "--port=x"]);
        assert_eq!(
            a.values::<u16>(&["--port"]).unwrap_err().0,
            "--port \"x\": invalid digit found in string"
        );
    }

    #[test]
    fn mistakes_are_named() {
        let mut a = args(&["--blksize", "big"]);
        let e = a.value::<u16>(&["--blksize"]).unwrap_err();
        assert!(e.0.contains("--blksize \"big\""), "{e}");
        let mut a = args(&["--root"]);
        assert_eq!(
            a.value::<String>(&["--root"]).unwrap_err().0,
            "--root needs a value"
        );
        let mut a = args(&[]);
        assert_eq!(
            a.required::<String>(&["--root"]).unwrap_err().0,
            "--root is required"
        );
        assert_eq!(
            args(&["--bogus"]).finish().unwrap_err().0,
            "unknown option --bogus"
        );
        assert_eq!(
            args(&["--bogus"]).positional("URL").unwrap_err().0,
            "unknown option --bogus"
        );
    }
}
