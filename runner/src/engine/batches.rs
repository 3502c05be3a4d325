//! How a round's VM instances are grouped: one batch per VM target (a
//! machine boots once for many instances), the largest batches split while
//! machines would otherwise leave cores idle.

use crate::plan::Target;
use crate::targets::vm::VmTarget;

/// A batch: a VM target and the plans' indices it runs, in starting order.
pub type Batch = (VmTarget, Vec<usize>);

/// The VM plans of `targets` (indexed like the plans) grouped by target, in
/// the order `order` starts them.
pub fn group(targets: &[&Target], order: &[usize]) -> Vec<Batch> {
    let mut batches: Vec<Batch> = Vec::new();
    for &i in order {
        if let Target::Vm(v) = targets[i] {
            match batches.iter_mut().find(|(b, _)| b == v) {
                Some((_, idx)) => idx.push(i),
                None => batches.push((v.clone(), vec![i])),
            }
        }
    }
    batches
}

/// Splits the largest batches in two while machines would otherwise leave
/// cores idle (a boot costs a few seconds under TCG: never below 4 instances).
pub fn split(mut batches: Vec<Batch>, jobs: usize) -> Vec<Batch> {
    while batches.len() < jobs {
        let Some(k) = (0..batches.len()).max_by_key(|&k| batches[k].1.len()) else { break };
        if batches[k].1.len() < 8 {
            break;
        }
        let half = batches[k].1.len() / 2;
        let rest = batches[k].1.split_off(half);
        let target = batches[k].0.clone();
        batches.push((target, rest));
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(k: &str) -> VmTarget {
        VmTarget::parse(&format!("vm:{k}")).unwrap_or_else(|| panic!("vm:{k}"))
    }

    #[test]
    fn batches_split_while_cores_would_idle() {
        // One kernel of 20 instances on 4 cores: four machines of 5.
        let b = split(vec![(target("6.1"), (0..20).collect())], 4);
        assert_eq!(b.iter().map(|(_, i)| i.len()).collect::<Vec<_>>(), [5, 5, 5, 5]);
        let mut all: Vec<usize> = b.iter().flat_map(|(_, i)| i.clone()).collect();
        all.sort();
        assert_eq!(all, (0..20).collect::<Vec<_>>());
        // Small batches stay whole (a boot costs more than it saves).
        assert_eq!(split(vec![(target("6.1"), (0..7).collect())], 8).len(), 1);
        // As many batches as cores: nothing to split.
        let two = vec![(target("6.1"), (0..30).collect()), (target("7.3"), (30..60).collect())];
        assert_eq!(split(two, 2).len(), 2);
    }

    #[test]
    fn plans_group_by_vm_target_in_starting_order() {
        let host = Target::Host(crate::targets::host::HostTarget::Kernel);
        let (a, b) = (Target::Vm(target("6.1")), Target::Vm(target("7.3")));
        let targets = [&a, &host, &b, &a, &b];
        let g = group(&targets, &[4, 3, 2, 1, 0]);
        assert_eq!(g, vec![(target("7.3"), vec![4, 2]), (target("6.1"), vec![3, 0])]);
    }
}
