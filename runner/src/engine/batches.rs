//! How a round's VM instances are grouped: one batch per kernel, whatever
//! the driver (a machine boots once for the kernel, fuse and rootless
//! instances of its kernel: the guest agent runs each plan with its own
//! driver), the largest batches split while that balances the machines.

use crate::plan::Target;
use crate::targets::vm::VmTarget;

/// A batch: the machine's kernel (as `vm:KERNEL`, the kernel driver's
/// target name) and the plans' indices it runs, in starting order.
pub type Batch = (VmTarget, Vec<usize>);

/// The VM plans of `targets` (indexed like the plans) grouped by kernel, in
/// the order `order` starts them.
pub fn group(targets: &[&Target], order: &[usize]) -> Vec<Batch> {
    let mut batches: Vec<Batch> = Vec::new();
    for &i in order {
        if let Target::Vm(v) = targets[i] {
            // Module parameters are the machine's (its kernel command line).
            let machine =
                VmTarget { kernel: v.kernel.clone(), driver: dsl::ast::Driver::Kernel, params: v.params.clone() };
            match batches.iter_mut().find(|(b, _)| *b == machine) {
                Some((_, idx)) => idx.push(i),
                None => batches.push((machine, vec![i])),
            }
        }
    }
    batches
}

/// A batch's half must hold at least this many instances to be worth a boot
/// of its own: a boot costs 3 to 6 s under TCG, an instance 0.2 to 0.7 s.
const SPLIT_AT: usize = 2 * 60;

/// Splits the largest batches in two until there are `4 * machines` of them
/// (machines that start the largest first then finish together, where one
/// long batch would keep one busy alone at the end), but never into halves
/// smaller than a boot is worth. Returns them largest first: the order to
/// start them in.
pub fn split(mut batches: Vec<Batch>, machines: usize) -> Vec<Batch> {
    while batches.len() < 4 * machines {
        let Some(k) = (0..batches.len()).max_by_key(|&k| batches[k].1.len()) else { break };
        if batches[k].1.len() < SPLIT_AT {
            break;
        }
        let half = batches[k].1.len() / 2;
        let rest = batches[k].1.split_off(half);
        let target = batches[k].0.clone();
        batches.push((target, rest));
    }
    // Largest first; ties keep their order (the kernels in starting order).
    batches.sort_by_key(|b| std::cmp::Reverse(b.1.len()));
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(k: &str) -> VmTarget {
        VmTarget::parse(&format!("vm:{k}")).unwrap_or_else(|| panic!("vm:{k}"))
    }

    #[test]
    fn batches_split_while_it_balances_the_machines() {
        // One kernel of 480 instances on 2 machines: 8 batches of 60, largest first.
        let b = split(vec![(target("6.1"), (0..480).collect())], 2);
        assert_eq!(b.iter().map(|(_, i)| i.len()).collect::<Vec<_>>(), [60; 8]);
        let mut all: Vec<usize> = b.iter().flat_map(|(_, i)| i.clone()).collect();
        all.sort();
        assert_eq!(all, (0..480).collect::<Vec<_>>());
        // Small batches stay whole (a boot costs more than it saves).
        assert_eq!(split(vec![(target("6.1"), (0..119).collect())], 8).len(), 1);
        // Enough batches: nothing to split; the largest starts first.
        let kernels: Vec<Batch> = ["5.10", "6.1", "6.12", "7.2"]
            .iter()
            .enumerate()
            .map(|(k, n)| (target(n), (0..10 * (k + 1)).collect()))
            .collect();
        let b = split(kernels, 1);
        assert_eq!(b.iter().map(|(t, _)| t.kernel.as_str()).collect::<Vec<_>>(), ["7.2", "6.12", "6.1", "5.10"]);
    }

    #[test]
    fn plans_group_by_kernel_in_starting_order() {
        let host = Target::Host(crate::targets::host::HostTarget::Kernel);
        let (a, b) = (Target::Vm(target("6.1")), Target::Vm(target("7.3")));
        let (fuse, rootless) = (Target::Vm(target("6.1/fuse")), Target::Vm(target("7.3/rootless")));
        let targets = [&a, &host, &b, &a, &b, &fuse, &rootless];
        let g = group(&targets, &[6, 4, 5, 3, 2, 1, 0]);
        // Every driver of a kernel in its one machine, named by the kernel.
        assert_eq!(g, vec![(target("7.3"), vec![6, 4, 2]), (target("6.1"), vec![5, 3, 0])]);
    }
}
