//! Walking and rewriting expression trees: the children of a node, bottom-up rewrites, the
//! columns an expression reads, and outer references.

use super::Expr;
use crate::error::SqlResult;
use crate::types::Value;

impl Expr {
    /// The direct children of this node.
    pub fn children(&self) -> Vec<&Expr> {
        match self {
            Expr::Const(_)
            | Expr::Column(_)
            | Expr::Outer { .. }
            | Expr::AggregateRef(_)
            | Expr::SubqueryRef(_) => vec![],
            Expr::Compare { left, right, .. }
            | Expr::Arith { left, right, .. }
            | Expr::Concat { left, right, .. }
            | Expr::DistinctFrom { left, right, .. }
            | Expr::And(left, right)
            | Expr::Or(left, right) => vec![left, right],
            Expr::Neg { expr, .. }
            | Expr::Not(expr)
            | Expr::IsNull { expr, .. }
            | Expr::IsBool { expr, .. }
            | Expr::Cast { expr, .. }
            | Expr::Abs { expr, .. }
            | Expr::Math { expr, .. } => vec![expr],
            Expr::ConcatAll(args) => args.iter().map(|(e, _)| e).collect(),
            Expr::CompareEach { operand, tests, .. } => {
                let mut out = vec![operand.as_ref()];
                out.extend(tests.iter().map(|(_, e, _)| e));
                out
            }
            Expr::Case {
                branches,
                otherwise,
            } => {
                let mut out = Vec::with_capacity(branches.len() * 2 + 1);
                for (test, result) in branches {
                    out.push(test);
                    out.push(result);
                }
                out.push(otherwise);
                out
            }
            Expr::Coalesce(args) | Expr::Extreme { args, .. } | Expr::Text { args, .. } => {
                args.iter().collect()
            }
            Expr::NullIf { value, equals } => vec![value, equals],
            Expr::Like { expr, pattern, .. } => vec![expr, pattern],
        }
    }

    /// Rebuilds this node with `f` applied to each direct child.
    pub fn map_children(self, f: &mut dyn FnMut(Expr) -> SqlResult<Expr>) -> SqlResult<Expr> {
        let mut boxed = |b: Box<Expr>| -> SqlResult<Box<Expr>> { Ok(Box::new(f(*b)?)) };
        Ok(match self {
            leaf @ (Expr::Const(_)
            | Expr::Column(_)
            | Expr::Outer { .. }
            | Expr::AggregateRef(_)
            | Expr::SubqueryRef(_)) => leaf,
            Expr::Compare {
                op,
                left,
                right,
                blank_padded,
            } => Expr::Compare {
                op,
                left: boxed(left)?,
                right: boxed(right)?,
                blank_padded,
            },
            Expr::Arith {
                op,
                left,
                right,
                ty,
            } => Expr::Arith {
                op,
                left: boxed(left)?,
                right: boxed(right)?,
                ty,
            },
            Expr::Concat {
                left,
                left_ty,
                right,
                right_ty,
            } => Expr::Concat {
                left: boxed(left)?,
                left_ty,
                right: boxed(right)?,
                right_ty,
            },
            Expr::DistinctFrom {
                left,
                right,
                blank_padded,
                negated,
            } => Expr::DistinctFrom {
                left: boxed(left)?,
                right: boxed(right)?,
                blank_padded,
                negated,
            },
            Expr::And(l, r) => Expr::And(boxed(l)?, boxed(r)?),
            Expr::Or(l, r) => Expr::Or(boxed(l)?, boxed(r)?),
            Expr::Neg { expr, ty } => Expr::Neg {
                expr: boxed(expr)?,
                ty,
            },
            Expr::Not(e) => Expr::Not(boxed(e)?),
            Expr::IsNull { expr, negated } => Expr::IsNull {
                expr: boxed(expr)?,
                negated,
            },
            Expr::IsBool {
                expr,
                value,
                negated,
            } => Expr::IsBool {
                expr: boxed(expr)?,
                value,
                negated,
            },
            Expr::Cast {
                expr,
                from,
                to,
                explicit,
            } => Expr::Cast {
                expr: boxed(expr)?,
                from,
                to,
                explicit,
            },
            Expr::Abs { expr, ty } => Expr::Abs {
                expr: boxed(expr)?,
                ty,
            },
            Expr::Math { func, expr } => Expr::Math {
                func,
                expr: boxed(expr)?,
            },
            Expr::ConcatAll(args) => Expr::ConcatAll(
                args.into_iter()
                    .map(|(e, ty)| Ok((f(e)?, ty)))
                    .collect::<SqlResult<_>>()?,
            ),
            Expr::CompareEach {
                operand,
                tests,
                all,
            } => Expr::CompareEach {
                operand: boxed(operand)?,
                tests: tests
                    .into_iter()
                    .map(|(op, e, padded)| Ok((op, f(e)?, padded)))
                    .collect::<SqlResult<_>>()?,
                all,
            },
            Expr::Case {
                branches,
                otherwise,
            } => Expr::Case {
                branches: branches
                    .into_iter()
                    .map(|(t, r)| Ok((f(t)?, f(r)?)))
                    .collect::<SqlResult<_>>()?,
                otherwise: Box::new(f(*otherwise)?),
            },
            Expr::Coalesce(args) => {
                Expr::Coalesce(args.into_iter().map(&mut *f).collect::<SqlResult<_>>()?)
            }
            Expr::Extreme { args, greatest } => Expr::Extreme {
                args: args.into_iter().map(&mut *f).collect::<SqlResult<_>>()?,
                greatest,
            },
            Expr::Text { func, args } => Expr::Text {
                func,
                args: args.into_iter().map(&mut *f).collect::<SqlResult<_>>()?,
            },
            Expr::NullIf { value, equals } => Expr::NullIf {
                value: Box::new(f(*value)?),
                equals: Box::new(f(*equals)?),
            },
            Expr::Like {
                expr,
                pattern,
                escape,
                case_insensitive,
                negated,
                pad,
            } => Expr::Like {
                expr: Box::new(f(*expr)?),
                pattern: Box::new(f(*pattern)?),
                escape,
                case_insensitive,
                negated,
                pad,
            },
        })
    }

    /// Rewrites bottom-up: children first, then `f` on the rebuilt node.
    #[recursive::recursive]
    pub fn transform_up(self, f: &mut dyn FnMut(Expr) -> SqlResult<Expr>) -> SqlResult<Expr> {
        let node = self.map_children(&mut |child| child.transform_up(f))?;
        f(node)
    }

    /// Rewrites top-down: `f` decides for each node whether it replaces it (`Ok(Some)`) or
    /// its children are visited (`Ok(None)`).
    #[recursive::recursive]
    pub fn transform_down(
        self,
        f: &mut dyn FnMut(&Expr) -> SqlResult<Option<Expr>>,
    ) -> SqlResult<Expr> {
        if let Some(replacement) = f(&self)? {
            return Ok(replacement);
        }
        self.map_children(&mut |child| child.transform_down(f))
    }

    /// Calls `f` on every node, parents first.
    #[recursive::recursive]
    pub fn visit(&self, f: &mut dyn FnMut(&Expr)) {
        f(self);
        for child in self.children() {
            child.visit(f);
        }
    }

    /// Whether any node satisfies `f`.
    pub fn any(&self, f: &dyn Fn(&Expr) -> bool) -> bool {
        let mut found = false;
        self.visit(&mut |e| found |= f(e));
        found
    }

    /// The input columns read, each once, in ascending order.
    pub fn columns_used(&self) -> Vec<usize> {
        let mut used = Vec::new();
        self.visit(&mut |e| {
            if let Expr::Column(i) = e {
                used.push(*i);
            }
        });
        used.sort_unstable();
        used.dedup();
        used
    }

    /// Replaces each `Column(i)` by `f(i)`.
    pub fn replace_columns(self, f: &dyn Fn(usize) -> Expr) -> Expr {
        self.transform_up(&mut |e| {
            Ok(match e {
                Expr::Column(i) => f(i),
                other => other,
            })
        })
        .expect("infallible")
    }

    /// Renumbers columns: `Column(i)` becomes `Column(f(i))`.
    pub fn shift_columns(self, f: &dyn Fn(usize) -> usize) -> Expr {
        self.replace_columns(&|i| Expr::Column(f(i)))
    }

    /// Whether the expression is evaluated without an input row: no columns, outer
    /// references, aggregates or subqueries.
    pub fn is_constant(&self) -> bool {
        !self.any(&|e| {
            matches!(
                e,
                Expr::Column(_) | Expr::Outer { .. } | Expr::AggregateRef(_) | Expr::SubqueryRef(_)
            )
        })
    }

    /// Replaces outer references `levels` up by the values of `row`.
    pub fn bind_outer(&mut self, row: &[Value], levels: usize) {
        if !self.any(&|e| matches!(e, Expr::Outer { depth, .. } if *depth == levels)) {
            return;
        }
        let taken = std::mem::replace(self, Expr::Const(Value::Null));
        *self = taken
            .transform_up(&mut |e| {
                Ok(match e {
                    Expr::Outer { depth, index } if depth == levels => {
                        Expr::Const(row.get(index).cloned().unwrap_or(Value::Null))
                    }
                    other => other,
                })
            })
            .expect("infallible");
    }

    /// The deepest outer reference (0 if none).
    pub fn max_outer_depth(&self) -> usize {
        let mut deepest = 0;
        self.visit(&mut |e| {
            if let Expr::Outer { depth, .. } = e {
                deepest = deepest.max(*depth);
            }
        });
        deepest
    }

    /// The conjuncts of an AND tree, owned.
    pub fn into_conjuncts(self) -> Vec<Expr> {
        let mut out = Vec::new();
        let mut stack = vec![self];
        while let Some(e) = stack.pop() {
            match e {
                Expr::And(l, r) => {
                    stack.push(*r);
                    stack.push(*l);
                }
                other => out.push(other),
            }
        }
        out
    }

    /// The AND of `conjuncts` (`None` if there are none).
    pub fn and_all(conjuncts: Vec<Expr>) -> Option<Expr> {
        conjuncts
            .into_iter()
            .reduce(|a, b| Expr::And(Box::new(a), Box::new(b)))
    }
}
