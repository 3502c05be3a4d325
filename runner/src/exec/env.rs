//! What a scenario's conditions (`requires`, `if`) are evaluated against:
//! the kernel's version, the driver, the mount options in force, the
//! instance's `param` layout.

use dsl::ast::{Cond, Driver, Stmt};

/// What conditions are evaluated against.
#[derive(Clone, Debug)]
pub struct Env {
    pub kernel: [u32; 3],
    pub driver: Driver,
    /// The mount options in force (the last `mount`'s, then `vary`'s).
    pub options: Vec<(String, Option<String>)>,
    /// The instance's `param` values (its layout).
    pub layout: Vec<(String, String)>,
}

impl Env {
    pub fn holds(&self, c: &Cond) -> bool {
        match c {
            Cond::Kernel { op, version } => op.holds(self.kernel.cmp(&version.node.parts())),
            Cond::Driver { equal, driver } => (self.driver == driver.node) == *equal,
            Cond::Option(o) => self.options.iter().any(|(n, v)| *n == o.name && (o.value.is_none() || *v == o.value)),
            Cond::Param(p) => {
                self.layout.iter().any(|(n, v)| *n == p.name && p.value.as_ref().is_none_or(|want| want == v))
            }
            Cond::Not(x) => !self.holds(x),
            Cond::And(a, b) => self.holds(a) && self.holds(b),
            Cond::Or(a, b) => self.holds(a) || self.holds(b),
        }
    }
}

/// A condition in words, for skip reasons.
pub fn describe_cond(c: &Cond) -> String {
    let s = dsl::format_stmt(&Stmt::Requires(vec![c.clone()]));
    s.trim_start_matches("requires ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The conditions of a `requires` line.
    fn conds(line: &str) -> Vec<Cond> {
        let text = format!("scenario \"c\"\n{line}\nlayer l {{\n    dir /d\n}}\nmount l\n");
        dsl::parse("c.ovl", "c", text.as_bytes()).unwrap_or_else(|f| panic!("{}", f.short())).requires()
    }

    fn env(kernel: [u32; 3], driver: Driver, options: &[(&str, Option<&str>)]) -> Env {
        Env {
            kernel,
            driver,
            options: options.iter().map(|(k, v)| (k.to_string(), v.map(str::to_string))).collect(),
            layout: vec![("layout".into(), "maxfs".into())],
        }
    }

    #[test]
    fn conditions_hold_against_kernel_driver_and_options() {
        let e = env([6, 1, 0], Driver::Kernel, &[("redirect_dir", Some("on")), ("userxattr", None)]);
        let holds = |line: &str| conds(line).iter().all(|c| e.holds(c));
        assert!(holds("requires kernel >= 5.11"));
        assert!(!holds("requires kernel >= 6.5"));
        assert!(holds("requires kernel < 6.1.1"));
        assert!(holds("requires driver == kernel, driver != fuse"));
        assert!(!holds("requires driver == rootless"));
        assert!(holds("requires driver == fuse or kernel >= 6.0"));
        assert!(holds("requires not (driver == fuse and kernel >= 6.0)"));
        assert!(holds("requires option redirect_dir=on, option userxattr"));
        assert!(!holds("requires option redirect_dir=off"));
        assert!(holds("requires option redirect_dir"), "a name alone: any value");
        assert!(!holds("requires option index"));
        assert!(holds("requires param layout=maxfs") && holds("requires param layout"));
        assert!(!holds("requires param layout=samefs") && !holds("requires param ts"));
    }

    #[test]
    fn conditions_read_back_in_words() {
        let c = conds("requires driver != rootless or kernel >= 5.11");
        assert_eq!(describe_cond(&c[0]), "driver != rootless or kernel >= 5.11");
    }
}
