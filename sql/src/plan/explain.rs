//! `EXPLAIN`: a plan as text, one node per line, children indented under their parent and
//! marked `->`, each with what it does: a scan's access path (`get id = 5`, `range id >= 3
//! AND id <= 9`, `full`) and filter, a join's algorithm and condition, and so on.
//! Expressions are printed with the column names of the node's input.

use super::{AggregateCall, AggregateFn, JoinAlgorithm, Plan, Spans, SubqueryKind};
use crate::expr::{ArithOp, CmpOp, Expr, MathFn, TextFn};
use crate::types::Value;

/// The plan's lines.
pub fn explain(plan: &Plan) -> Vec<String> {
    explain_annotated(plan, &|_| None)
}

/// The plan's lines, each node's followed by what `annotate` says about it (given the node's
/// path: child indexes from the root, as [`Plan::children`] orders them).
pub fn explain_annotated(
    plan: &Plan,
    annotate: &dyn Fn(&[usize]) -> Option<String>,
) -> Vec<String> {
    let mut lines = Vec::new();
    let mut printer = Printer {
        lines: &mut lines,
        annotate,
    };
    printer.node(plan, 0, &mut Vec::new());
    lines
}

struct Printer<'a> {
    lines: &'a mut Vec<String>,
    annotate: &'a dyn Fn(&[usize]) -> Option<String>,
}

/// The path given to subquery plans and other nodes that are not measured.
const UNMEASURED: usize = usize::MAX;

fn push(lines: &mut Vec<String>, depth: usize, text: String) {
    if depth == 0 {
        lines.push(text);
    } else {
        lines.push(format!("{}-> {text}", "  ".repeat(depth)));
    }
}

impl Printer<'_> {
    #[recursive::recursive]
    fn node(&mut self, plan: &Plan, depth: usize, path: &mut Vec<usize>) {
        let mut text = match plan {
            Plan::Scan(scan) => {
                let mut text = match &scan.index {
                    None => format!("Scan {}", scan.table.name),
                    Some(access) if access.only => format!("Index-only scan {}", scan.table.name),
                    Some(_) => format!("Index scan {}", scan.table.name),
                };
                if scan.qualifier != scan.table.name {
                    text.push_str(&format!(" {}", scan.qualifier));
                }
                if let Some(access) = &scan.index {
                    text.push_str(&format!(" using {}", access.index.name));
                }
                let access = match &scan.spans {
                    Spans::Full => "full".to_string(),
                    Spans::Points { shown, .. } => format!("get {shown}"),
                    Spans::Ranges { ranges, shown } if ranges.len() == 1 => {
                        format!("range {shown}")
                    }
                    Spans::Ranges { shown, .. } => format!("ranges {shown}"),
                    Spans::Nothing => "nothing".to_string(),
                };
                text.push_str(&format!(" ({access})"));
                if let Some(filter) = &scan.filter {
                    text.push_str(&format!(
                        " filter {}",
                        expr_text(filter, &plan.column_names())
                    ));
                }
                if let Some(hint) = scan.limit_hint {
                    text.push_str(&format!(" first {hint} rows"));
                }
                if scan.lock {
                    text.push_str(" locking");
                }
                text
            }
            Plan::Values { rows, .. } => format!("Values ({} rows)", rows.len()),
            Plan::Series {
                start, stop, step, ..
            } => format!(
                "Series generate_series({}, {}, {})",
                expr_text(start, &[]),
                expr_text(stop, &[]),
                expr_text(step, &[])
            ),
            Plan::Empty { .. } => "Empty".to_string(),
            Plan::Filter { input, predicate } => {
                format!("Filter {}", expr_text(predicate, &input.column_names()))
            }
            Plan::Project { input, exprs, .. } => {
                let names = input.column_names();
                let shown: Vec<String> = exprs.iter().map(|e| expr_text(e, &names)).collect();
                format!("Project {}", shown.join(", "))
            }
            Plan::Join {
                kind,
                on,
                algorithm,
                ..
            } => {
                let name = match algorithm {
                    JoinAlgorithm::Hash { .. } => "HashJoin",
                    JoinAlgorithm::Lookup { .. } => "LookupJoin",
                    JoinAlgorithm::NestedLoop => "NestedLoopJoin",
                };
                let mut text = format!("{name} {}", kind.name());
                if let Some(on) = on {
                    text.push_str(&format!(" on {}", expr_text(on, &plan.column_names())));
                }
                text
            }
            Plan::Aggregate {
                input,
                group_by,
                aggregates,
            } => {
                let names = input.column_names();
                let mut text = "Aggregate".to_string();
                if !group_by.is_empty() {
                    let keys: Vec<String> = group_by.iter().map(|e| expr_text(e, &names)).collect();
                    text.push_str(&format!(" by {}", keys.join(", ")));
                }
                if !aggregates.is_empty() {
                    let calls: Vec<String> = aggregates
                        .iter()
                        .map(|a| aggregate_text(a, &names))
                        .collect();
                    text.push_str(&format!(": {}", calls.join(", ")));
                }
                text
            }
            Plan::Distinct { .. } => "Distinct".to_string(),
            Plan::Sort { input, keys, top } => {
                let names = input.column_names();
                let keys: Vec<String> = keys
                    .iter()
                    .map(|k| {
                        let mut key = names[k.column].clone();
                        if k.descending {
                            key.push_str(" DESC");
                        }
                        if k.nulls_first != k.descending {
                            key.push_str(if k.nulls_first {
                                " NULLS FIRST"
                            } else {
                                " NULLS LAST"
                            });
                        }
                        key
                    })
                    .collect();
                match top {
                    Some(n) => format!("Sort {} (top {n})", keys.join(", ")),
                    None => format!("Sort {}", keys.join(", ")),
                }
            }
            Plan::Limit { limit, offset, .. } => {
                let mut text = match limit {
                    Some(n) => format!("Limit {n}"),
                    None => "Limit ALL".to_string(),
                };
                if *offset > 0 {
                    text.push_str(&format!(" offset {offset}"));
                }
                text
            }
            Plan::SetOp { op, all, .. } => {
                format!("{}{}", op.name(), if *all { " ALL" } else { "" })
            }
            Plan::Apply { subqueries, .. } => {
                format!(
                    "Apply {} subquer{}",
                    subqueries.len(),
                    if subqueries.len() == 1 { "y" } else { "ies" }
                )
            }
        };
        if let Some(note) = (self.annotate)(path) {
            text.push_str(&format!(" {note}"));
        }
        let lines = &mut *self.lines;
        push(lines, depth, text);
        if let Plan::Apply { input, subqueries } = plan {
            path.push(0);
            self.node(input, depth + 1, path);
            path.pop();
            let names = input.column_names();
            for subquery in subqueries {
                let kind = match &subquery.kind {
                    SubqueryKind::Scalar => "Scalar".to_string(),
                    SubqueryKind::Exists => "Exists".to_string(),
                    SubqueryKind::In {
                        operand,
                        op: CmpOp::Eq,
                        all: false,
                        negated,
                        ..
                    } => format!(
                        "{}{} IN",
                        expr_text(operand, &names),
                        if *negated { " NOT" } else { "" }
                    ),
                    SubqueryKind::In {
                        operand,
                        op,
                        all,
                        negated,
                        ..
                    } => format!(
                        "{}{} {} {}",
                        if *negated { "NOT " } else { "" },
                        expr_text(operand, &names),
                        op.symbol(),
                        if *all { "ALL" } else { "ANY" }
                    ),
                };
                let correlated = if subquery.correlated {
                    " correlated".to_string()
                } else if !subquery.outer_keys.is_empty() {
                    let keys: Vec<String> = subquery
                        .outer_keys
                        .iter()
                        .map(|k| expr_text(k, &names))
                        .collect();
                    format!(" hashed on ({})", keys.join(", "))
                } else {
                    String::new()
                };
                push(
                    self.lines,
                    depth + 1,
                    format!("Subquery {kind}{correlated}"),
                );
                path.push(UNMEASURED);
                self.node(&subquery.plan, depth + 2, path);
                path.pop();
            }
            return;
        }
        if let Plan::Join {
            left,
            right,
            algorithm: JoinAlgorithm::Lookup { left_keys },
            ..
        } = plan
            && let Plan::Scan(scan) = right.as_ref()
        {
            path.push(0);
            self.node(left, depth + 1, path);
            path.pop();
            let names = left.column_names();
            let columns = match &scan.index {
                Some(access) => &access.index.columns,
                None => &scan.table.primary_key,
            };
            let keys: Vec<String> = columns
                .iter()
                .zip(left_keys)
                .map(|(&c, k)| format!("{} = {}", scan.table.columns[c].name, expr_text(k, &names)))
                .collect();
            let mut text = match &scan.index {
                Some(access) => format!(
                    "Index scan {} using {} (range {} per row)",
                    scan.table.name,
                    access.index.name,
                    keys.join(" AND ")
                ),
                None => format!(
                    "Scan {} (get {} per row)",
                    scan.table.name,
                    keys.join(" AND ")
                ),
            };
            if let Some(filter) = &scan.filter {
                text.push_str(&format!(
                    " filter {}",
                    expr_text(filter, &right.column_names())
                ));
            }
            push(self.lines, depth + 1, text);
            return;
        }
        for (i, child) in plan.children().into_iter().enumerate() {
            path.push(i);
            self.node(child, depth + 1, path);
            path.pop();
        }
    }
}

/// An aggregate call as text.
pub fn aggregate_text(call: &AggregateCall, names: &[String]) -> String {
    if call.func == AggregateFn::CountStar && call.filter.is_none() {
        return "count(*)".to_string();
    }
    let args: Vec<String> = call.args.iter().map(|a| expr_text(a, names)).collect();
    let distinct = if call.distinct { "DISTINCT " } else { "" };
    let filter = match &call.filter {
        Some(f) => format!(" FILTER (WHERE {})", expr_text(f, names)),
        None => String::new(),
    };
    format!(
        "{}({distinct}{}){filter}",
        call.func.name(),
        args.join(", ")
    )
}

/// A value as a SQL literal.
pub fn value_text(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Text(s) => format!("'{}'", s.replace('\'', "''")),
    }
}

/// An expression as text, columns named by `names`.
#[recursive::recursive]
pub fn expr_text(expr: &Expr, names: &[String]) -> String {
    let t = |e: &Expr| expr_text(e, names);
    match expr {
        Expr::Const(v) => value_text(v),
        Expr::Column(i) => names.get(*i).cloned().unwrap_or_else(|| format!("#{i}")),
        Expr::Outer { depth, index } => format!("outer{depth}.#{index}"),
        Expr::AggregateRef(k) => format!("aggregate#{k}"),
        Expr::SubqueryRef(k) => format!("subquery#{k}"),
        Expr::Compare {
            op, left, right, ..
        } => format!("{} {} {}", t(left), op.symbol(), t(right)),
        Expr::Arith {
            op, left, right, ..
        } => {
            let symbol = match op {
                ArithOp::Add => "+",
                ArithOp::Sub => "-",
                ArithOp::Mul => "*",
                ArithOp::Div => "/",
                ArithOp::Mod => "%",
            };
            format!("({} {symbol} {})", t(left), t(right))
        }
        Expr::Concat { left, right, .. } => format!("({} || {})", t(left), t(right)),
        Expr::Neg { expr, .. } => format!("-{}", t(expr)),
        Expr::Not(e) => format!("NOT {}", t(e)),
        Expr::And(l, r) => format!("{} AND {}", t(l), t(r)),
        Expr::Or(l, r) => format!("({} OR {})", t(l), t(r)),
        Expr::CompareEach {
            operand,
            tests,
            all,
        } => {
            if *all {
                let parts: Vec<String> = tests
                    .iter()
                    .map(|(op, e, _)| format!("{} {} {}", t(operand), op.symbol(), t(e)))
                    .collect();
                format!("({})", parts.join(" AND "))
            } else {
                let values: Vec<String> = tests.iter().map(|(_, e, _)| t(e)).collect();
                format!("{} IN ({})", t(operand), values.join(", "))
            }
        }
        Expr::IsNull { expr, negated } => {
            format!("{} IS {}NULL", t(expr), if *negated { "NOT " } else { "" })
        }
        Expr::IsBool {
            expr,
            value,
            negated,
        } => format!(
            "{} IS {}{}",
            t(expr),
            if *negated { "NOT " } else { "" },
            if *value { "TRUE" } else { "FALSE" }
        ),
        Expr::Cast { expr, to, .. } => format!("{}::{}", t(expr), to.pg_name()),
        Expr::Case {
            branches,
            otherwise,
        } => {
            let mut text = "CASE".to_string();
            for (test, result) in branches {
                text.push_str(&format!(" WHEN {} THEN {}", t(test), t(result)));
            }
            text.push_str(&format!(" ELSE {} END", t(otherwise)));
            text
        }
        Expr::Coalesce(args) => call("COALESCE", args, names),
        Expr::NullIf { value, equals } => format!("NULLIF({}, {})", t(value), t(equals)),
        Expr::Abs { expr, .. } => format!("abs({})", t(expr)),
        Expr::Text { func, args } => {
            let name = match func {
                TextFn::Lower => "lower",
                TextFn::Upper => "upper",
                TextFn::Length { .. } => "length",
                TextFn::Replace => "replace",
                TextFn::Substr => "substr",
                TextFn::Strpos => "strpos",
                TextFn::Trim {
                    leading: true,
                    trailing: true,
                } => "btrim",
                TextFn::Trim { leading: true, .. } => "ltrim",
                TextFn::Trim { .. } => "rtrim",
            };
            call(name, args, names)
        }
        Expr::Like {
            expr,
            pattern,
            case_insensitive,
            negated,
            ..
        } => format!(
            "{} {}{} {}",
            t(expr),
            if *negated { "NOT " } else { "" },
            if *case_insensitive { "ILIKE" } else { "LIKE" },
            t(pattern)
        ),
        Expr::DistinctFrom {
            left,
            right,
            negated,
            ..
        } => format!(
            "{} IS {}DISTINCT FROM {}",
            t(left),
            if *negated { "NOT " } else { "" },
            t(right)
        ),
        Expr::Math { func, expr } => {
            let name = match func {
                MathFn::Ceil => "ceil",
                MathFn::Floor => "floor",
                MathFn::Round => "round",
            };
            format!("{name}({})", t(expr))
        }
        Expr::ConcatAll(args) => {
            let args: Vec<String> = args.iter().map(|(e, _)| t(e)).collect();
            format!("concat({})", args.join(", "))
        }
        Expr::Extreme { args, greatest } => {
            call(if *greatest { "GREATEST" } else { "LEAST" }, args, names)
        }
    }
}

fn call(name: &str, args: &[Expr], names: &[String]) -> String {
    let args: Vec<String> = args.iter().map(|a| expr_text(a, names)).collect();
    format!("{name}({})", args.join(", "))
}
