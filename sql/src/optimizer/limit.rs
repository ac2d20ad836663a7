//! Limit hints: a LIMIT (plus OFFSET) above a scan with only projections between tells the
//! scan how many rows will be pulled at most, so that its first read asks the store for no
//! more (`SELECT * FROM t LIMIT 5` reads five rows, not a page of a thousand). Rows the
//! scan's own filter drops make it read further, in growing pages. Above a sort, it makes
//! the sort a top-N sort.

use crate::plan::Plan;

use super::fold::map_children_and_subqueries;

#[recursive::recursive]
pub fn hint(plan: Plan) -> Plan {
    match plan {
        Plan::Limit {
            mut input,
            limit: Some(limit),
            offset,
        } => {
            set_hint(&mut input, limit.saturating_add(offset));
            Plan::Limit {
                input: Box::new(hint(*input)),
                limit: Some(limit),
                offset,
            }
        }
        other => map_children_and_subqueries(other, hint),
    }
}

fn set_hint(plan: &mut Plan, rows: u64) {
    match plan {
        Plan::Scan(scan) => scan.limit_hint = Some(rows),
        Plan::Project { input, .. } => set_hint(input, rows),
        // A sort under a limit keeps only the first rows.
        Plan::Sort { top, .. } => *top = Some(rows),
        _ => {}
    }
}
