//! Binding scalar functions by PostgreSQL's signatures: `ceil`/`ceiling`, `floor`, `round`
//! (of `double precision`; integer arguments are read as `double precision`, where
//! PostgreSQL would use `numeric`), `mod`, `substr`/`substring`, `strpos`/`position`,
//! `concat`, and `btrim`/`ltrim`/`rtrim`/`trim`. A call with arguments of other types is an
//! undefined function (42883), as in PostgreSQL.

use super::{ArithOp, Expr, ExprType, MathFn, TextFn, Typed, coerce_to, wider_numeric};
use crate::error::{SqlError, SqlResult, sqlstate};
use crate::types::{SqlType, Value};

fn no_such(name: &str, args: &[Typed]) -> SqlError {
    let listed: Vec<String> = args.iter().map(|a| a.ty.name()).collect();
    SqlError::new(
        sqlstate::UNDEFINED_FUNCTION,
        format!("function {name}({}) does not exist", listed.join(", ")),
    )
}

fn is_string(t: &ExprType) -> bool {
    match t {
        ExprType::Known(t) => t.is_string(),
        ExprType::Unknown(_) => true,
    }
}

fn is_integer(t: &ExprType) -> bool {
    match t {
        ExprType::Known(t) => t.is_integer(),
        ExprType::Unknown(_) => true,
    }
}

/// A string argument as text (a `character(n)` value without its padding, as PostgreSQL
/// converts it).
fn text_arg(arg: Typed) -> SqlResult<Expr> {
    match arg.ty {
        ExprType::Known(SqlType::Char(_)) => Ok(Expr::Text {
            func: TextFn::Trim {
                leading: false,
                trailing: true,
            },
            args: vec![
                coerce_to(arg, SqlType::Text)?,
                Expr::Const(Value::Text(" ".into())),
            ],
        }),
        _ => coerce_to(arg, SqlType::Text),
    }
}

pub fn bind_scalar(name: &str, args: Vec<Typed>) -> SqlResult<Typed> {
    let types: Vec<ExprType> = args.iter().map(|a| a.ty.clone()).collect();
    match (name, types.as_slice()) {
        ("ceil" | "ceiling" | "floor" | "round", [t]) => {
            let numeric = match t {
                ExprType::Known(t) => t.is_numeric(),
                ExprType::Unknown(_) => true,
            };
            if !numeric {
                return Err(no_such(name, &args));
            }
            let func = match name {
                "floor" => MathFn::Floor,
                "round" => MathFn::Round,
                _ => MathFn::Ceil,
            };
            let arg = args.into_iter().next().expect("one argument");
            let expr = coerce_to(arg, SqlType::Double)?;
            Ok(Typed::known(
                Expr::Math {
                    func,
                    expr: Box::new(expr),
                },
                SqlType::Double,
            ))
        }
        ("mod", [a, b]) if is_integer(a) && is_integer(b) => {
            let known = |t: &ExprType| match t {
                ExprType::Known(t) => *t,
                ExprType::Unknown(_) => SqlType::Int,
            };
            let ty = wider_numeric(known(a), known(b));
            let mut args = args.into_iter();
            let left = coerce_to(args.next().expect("two"), ty)?;
            let right = coerce_to(args.next().expect("two"), ty)?;
            Ok(Typed::known(
                Expr::Arith {
                    op: ArithOp::Mod,
                    left: Box::new(left),
                    right: Box::new(right),
                    ty,
                },
                ty,
            ))
        }
        ("substr" | "substring", [s, rest @ ..])
            if is_string(s) && (1..=2).contains(&rest.len()) && rest.iter().all(is_integer) =>
        {
            let mut args = args.into_iter();
            let mut exprs = vec![text_arg(args.next().expect("string"))?];
            for arg in args {
                exprs.push(coerce_to(arg, SqlType::BigInt)?);
            }
            Ok(Typed::known(
                Expr::Text {
                    func: TextFn::Substr,
                    args: exprs,
                },
                SqlType::Text,
            ))
        }
        ("strpos", [a, b]) if is_string(a) && is_string(b) => {
            let args = args
                .into_iter()
                .map(text_arg)
                .collect::<SqlResult<Vec<_>>>()?;
            Ok(Typed::known(
                Expr::Text {
                    func: TextFn::Strpos,
                    args,
                },
                SqlType::Int,
            ))
        }
        ("btrim" | "ltrim" | "rtrim", [s, rest @ ..])
            if is_string(s) && rest.len() <= 1 && rest.iter().all(is_string) =>
        {
            let mut exprs = args
                .into_iter()
                .map(text_arg)
                .collect::<SqlResult<Vec<_>>>()?;
            if exprs.len() == 1 {
                exprs.push(Expr::Const(Value::Text(" ".into())));
            }
            Ok(Typed::known(
                Expr::Text {
                    func: TextFn::Trim {
                        leading: name != "rtrim",
                        trailing: name != "ltrim",
                    },
                    args: exprs,
                },
                SqlType::Text,
            ))
        }
        ("concat", _) => {
            let parts = args
                .into_iter()
                .map(|a| {
                    let ty = a.resolved_type();
                    Ok((coerce_to(a, ty)?, ty))
                })
                .collect::<SqlResult<Vec<_>>>()?;
            Ok(Typed::known(Expr::ConcatAll(parts), SqlType::Text))
        }
        _ => Err(no_such(name, &args)),
    }
}
