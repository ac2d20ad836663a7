//! Scalar expressions: binding sqlparser's AST against a row's columns (resolving names,
//! inferring and checking types) and evaluating the bound form with SQL's three-valued logic.
//!
//! # Typing
//!
//! Like PostgreSQL, a quoted literal (`'42'`) or `NULL` has no type of its own until its
//! context gives one: compared with an `integer` column it is parsed as an integer at bind
//! time (bad text → 22P02), stored into a `boolean` column it is parsed as a boolean. Numeric
//! literals are `integer` when they fit, else `bigint`, else (and with a fraction or exponent)
//! `double precision` (PostgreSQL would use `numeric`, which RegionDB lacks). Integer
//! arithmetic yields the wider operand type and fails with 22003 on overflow; mixing integers
//! and floats yields `double precision`. Operators between unrelated types fail with 42883,
//! as PostgreSQL's "operator does not exist".
//!
//! # NULL
//!
//! Comparisons and arithmetic with NULL yield NULL; `AND`/`OR`/`NOT` follow Kleene logic
//! (`NULL AND false` is false, `NULL OR true` is true); `WHERE` keeps only rows where the
//! condition is true.
//!
//! Not implemented: functions but `abs`, `COALESCE`, `NULLIF`, `lower`, `upper`, `length`
//! and `replace`; aggregates, subqueries,
//! parameters (`$1`), `SIMILAR TO`, date/time types.

use std::cmp::Ordering;

use sqlparser::ast;

use crate::error::{SqlError, SqlResult, sqlstate};
use crate::plan::{SubqueryDef, SubqueryKind};
use crate::types::{SqlType, Value, convert, parse_text, range_error};

mod aggregate;
mod functions;
mod walk;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    NotEq,
    Lt,
    LtEq,
    Gt,
    GtEq,
}

impl CmpOp {
    pub fn holds(self, ordering: Ordering) -> bool {
        match self {
            CmpOp::Eq => ordering == Ordering::Equal,
            CmpOp::NotEq => ordering != Ordering::Equal,
            CmpOp::Lt => ordering == Ordering::Less,
            CmpOp::LtEq => ordering != Ordering::Greater,
            CmpOp::Gt => ordering == Ordering::Greater,
            CmpOp::GtEq => ordering != Ordering::Less,
        }
    }

    /// The operator with its operands swapped: `a < b` ⇔ `b > a`.
    pub fn flip(self) -> CmpOp {
        match self {
            CmpOp::Lt => CmpOp::Gt,
            CmpOp::LtEq => CmpOp::GtEq,
            CmpOp::Gt => CmpOp::Lt,
            CmpOp::GtEq => CmpOp::LtEq,
            other => other,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::NotEq => "<>",
            CmpOp::Lt => "<",
            CmpOp::LtEq => "<=",
            CmpOp::Gt => ">",
            CmpOp::GtEq => ">=",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

impl ArithOp {
    fn symbol(self) -> &'static str {
        match self {
            ArithOp::Add => "+",
            ArithOp::Sub => "-",
            ArithOp::Mul => "*",
            ArithOp::Div => "/",
            ArithOp::Mod => "%",
        }
    }
}

/// A bound, type-checked expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Const(Value),
    Column(usize),
    /// Comparison; `blank_padded` compares strings ignoring trailing blanks (`character(n)`).
    Compare {
        op: CmpOp,
        left: Box<Expr>,
        right: Box<Expr>,
        blank_padded: bool,
    },
    Arith {
        op: ArithOp,
        left: Box<Expr>,
        right: Box<Expr>,
        ty: SqlType,
    },
    /// `||`: both sides rendered as text.
    Concat {
        left: Box<Expr>,
        left_ty: SqlType,
        right: Box<Expr>,
        right_ty: SqlType,
    },
    Neg {
        expr: Box<Expr>,
        ty: SqlType,
    },
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    /// One operand compared with several values, evaluated once: `x BETWEEN a AND b` (all of
    /// `x >= a`, `x <= b`) and `x IN (a, b, …)` (any of `x = a`, `x = b`, …), with SQL's
    /// three-valued logic. Each test is (operator, value, blank-padded comparison).
    CompareEach {
        operand: Box<Expr>,
        tests: Vec<(CmpOp, Expr, bool)>,
        all: bool,
    },
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    /// `IS [NOT] TRUE/FALSE`: never NULL.
    IsBool {
        expr: Box<Expr>,
        value: bool,
        negated: bool,
    },
    /// Conversion; `explicit` is `CAST`/`::` (truncating strings), otherwise an assignment.
    Cast {
        expr: Box<Expr>,
        from: SqlType,
        to: SqlType,
        explicit: bool,
    },
    /// `CASE WHEN c THEN r … [ELSE e] END` (a simple `CASE x WHEN v` is bound to `x = v`
    /// conditions): the result of the first true condition, else `otherwise` (NULL).
    Case {
        branches: Vec<(Expr, Expr)>,
        otherwise: Box<Expr>,
    },
    /// `COALESCE(a, …)`: the first argument that is not NULL, evaluated lazily.
    Coalesce(Vec<Expr>),
    /// `NULLIF(a, b)`: NULL if `a = b`, else `a`.
    NullIf {
        value: Box<Expr>,
        equals: Box<Expr>,
    },
    /// `abs(x)` of a numeric `x`, of type `ty`.
    Abs {
        expr: Box<Expr>,
        ty: SqlType,
    },
    /// A string function of text arguments (NULL in, NULL out).
    Text {
        func: TextFn,
        args: Vec<Expr>,
    },
    /// `x [NOT] LIKE/ILIKE pattern [ESCAPE e]` on strings; a `character(n)` value is
    /// matched with its padding to `pad` characters, as PostgreSQL matches it.
    Like {
        expr: Box<Expr>,
        pattern: Box<Expr>,
        escape: Option<char>,
        case_insensitive: bool,
        negated: bool,
        pad: Option<u32>,
    },
    /// `a IS [NOT] DISTINCT FROM b`: equality where NULL equals NULL; never NULL.
    DistinctFrom {
        left: Box<Expr>,
        right: Box<Expr>,
        blank_padded: bool,
        negated: bool,
    },
    /// A numeric function of one `double precision` argument (NULL in, NULL out).
    Math {
        func: MathFn,
        expr: Box<Expr>,
    },
    /// `concat(…)`: the arguments' text, NULLs skipped.
    ConcatAll(Vec<(Expr, SqlType)>),
    /// `GREATEST(…)` / `LEAST(…)`: the largest / smallest argument that is not NULL.
    Extreme {
        args: Vec<Expr>,
        greatest: bool,
    },
    /// A column of an enclosing query's row (`depth` queries up), in a correlated
    /// subquery's plan: replaced by its value before the subquery runs.
    Outer {
        depth: usize,
        index: usize,
    },
    /// The result of the `n`th aggregate call of the query being bound: rewritten by the
    /// planner into a column of the aggregation's output.
    AggregateRef(usize),
    /// The value of the `n`th subquery collected while binding: rewritten by the planner
    /// into a column appended by an Apply.
    SubqueryRef(usize),
}

/// The numeric functions ([`Expr::Math`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MathFn {
    Ceil,
    Floor,
    /// Half to even, as PostgreSQL rounds `double precision`.
    Round,
}

/// The string functions ([`Expr::Text`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextFn {
    Lower,
    Upper,
    /// Characters; of a `character(n)` value without its trailing blanks, as PostgreSQL
    /// counts them.
    Length {
        blank_padded: bool,
    },
    Replace,
    /// `substr(s, from [, count])`, 1-based.
    Substr,
    /// `strpos(s, sub)` / `position(sub in s)`: 1-based, 0 if absent.
    Strpos,
    /// `btrim`/`ltrim`/`rtrim(s, characters)`.
    Trim {
        leading: bool,
        trailing: bool,
    },
}

/// The type of a bound expression; `Unknown` is an untyped literal (quoted string or NULL)
/// that takes its type from context.
#[derive(Clone, Debug, PartialEq)]
pub enum ExprType {
    Known(SqlType),
    Unknown(Option<String>),
}

impl ExprType {
    pub fn name(&self) -> String {
        match self {
            ExprType::Known(t) => t.pg_name(),
            ExprType::Unknown(_) => "unknown".into(),
        }
    }
}

/// A bound expression with its type.
#[derive(Clone, Debug, PartialEq)]
pub struct Typed {
    pub expr: Expr,
    pub ty: ExprType,
}

impl Typed {
    pub fn known(expr: Expr, ty: SqlType) -> Typed {
        Typed {
            expr,
            ty: ExprType::Known(ty),
        }
    }

    /// The type, resolving an unknown literal as `text` (PostgreSQL's final fallback).
    pub fn resolved_type(&self) -> SqlType {
        match self.ty {
            ExprType::Known(t) => t,
            ExprType::Unknown(_) => SqlType::Text,
        }
    }

    /// Coerces the expression to `target` for assignment to a column (INSERT/UPDATE):
    /// unknown literals are parsed as `target`, known types must convert by assignment rules.
    pub fn coerce_for_assignment(self, target: SqlType, column: &str) -> SqlResult<Expr> {
        match self.ty {
            ExprType::Unknown(None) => Ok(Expr::Const(Value::Null)),
            ExprType::Unknown(Some(text)) => Ok(Expr::Const(parse_text(&text, target)?)),
            ExprType::Known(from) => {
                let assignable = from == target
                    || (from.is_numeric() && target.is_numeric())
                    || target.is_string();
                if !assignable {
                    return Err(SqlError::mismatch(format!(
                        "column \"{column}\" is of type {} but expression is of type {}",
                        target.pg_name(),
                        from.pg_name()
                    )));
                }
                Ok(Expr::Cast {
                    expr: Box::new(self.expr),
                    from,
                    to: target,
                    explicit: false,
                })
            }
        }
    }

    /// Requires a boolean (for WHERE, AND, OR, NOT): `context` names the construct.
    pub fn into_condition(self, context: &str) -> SqlResult<Expr> {
        match self.ty {
            ExprType::Known(SqlType::Bool) => Ok(self.expr),
            ExprType::Unknown(None) => Ok(Expr::Const(Value::Null)),
            ExprType::Unknown(Some(text)) => Ok(Expr::Const(parse_text(&text, SqlType::Bool)?)),
            ExprType::Known(other) => Err(SqlError::mismatch(format!(
                "argument of {context} must be type boolean, not type {}",
                other.pg_name()
            ))),
        }
    }

    /// Coerces for an operator whose other operand has type `other`.
    fn coerce_to_operand(self, other: SqlType) -> SqlResult<(Expr, SqlType)> {
        match self.ty {
            ExprType::Known(t) => Ok((self.expr, t)),
            ExprType::Unknown(None) => Ok((Expr::Const(Value::Null), other)),
            ExprType::Unknown(Some(text)) => {
                // Literals compare as the base type: no length limit, no padding.
                let target = if other.is_string() {
                    SqlType::Text
                } else {
                    other
                };
                Ok((Expr::Const(parse_text(&text, target)?), target))
            }
        }
    }
}

pub use crate::scope::{MAX_EXPRESSION_DEPTH, Scope};

/// Normalises an identifier: unquoted names fold to lower case, as in PostgreSQL.
pub fn ident_name(ident: &ast::Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        // PostgreSQL folds only ASCII letters.
        ident.value.to_ascii_lowercase()
    }
}

fn no_operator(op: &str, left: &ExprType, right: &ExprType) -> SqlError {
    SqlError::new(
        sqlstate::UNDEFINED_FUNCTION,
        format!(
            "operator does not exist: {} {op} {}",
            left.name(),
            right.name()
        ),
    )
}

fn bind_number(text: &str) -> SqlResult<Typed> {
    if let Ok(i) = text.parse::<i64>() {
        let ty = if i32::try_from(i).is_ok() {
            SqlType::Int
        } else {
            SqlType::BigInt
        };
        return Ok(Typed::known(Expr::Const(Value::Int(i)), ty));
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => Ok(Typed::known(Expr::Const(Value::Float(f)), SqlType::Double)),
        _ => Err(SqlError::new(
            sqlstate::INVALID_TEXT_REPRESENTATION,
            format!("invalid numeric literal \"{text}\""),
        )),
    }
}

fn bind_value(value: &ast::Value) -> SqlResult<Typed> {
    use ast::Value as V;
    match value {
        V::Number(text, _) => bind_number(text),
        V::SingleQuotedString(s)
        | V::EscapedStringLiteral(s)
        | V::DollarQuotedString(ast::DollarQuotedString { value: s, .. }) => Ok(Typed {
            expr: Expr::Const(Value::Text(s.clone())),
            ty: ExprType::Unknown(Some(s.clone())),
        }),
        V::Boolean(b) => Ok(Typed::known(Expr::Const(Value::Bool(*b)), SqlType::Bool)),
        V::Null => Ok(Typed {
            expr: Expr::Const(Value::Null),
            ty: ExprType::Unknown(None),
        }),
        V::Placeholder(p) => Err(SqlError::unsupported(format!("parameter {p}"))),
        other => Err(SqlError::unsupported(format!("literal {other}"))),
    }
}

/// Maps a SQL type name to a RegionDB type.
pub fn bind_type(data_type: &ast::DataType) -> SqlResult<SqlType> {
    use ast::DataType as D;
    let length = |len: &Option<ast::CharacterLength>| -> SqlResult<Option<u32>> {
        match len {
            None => Ok(None),
            Some(ast::CharacterLength::IntegerLength { length, .. }) => {
                match u32::try_from(*length) {
                    Ok(n) if (1..=10_485_760).contains(&n) => Ok(Some(n)),
                    _ => Err(SqlError::new(
                        sqlstate::INVALID_PARAMETER_VALUE,
                        format!(
                            "length for type varchar must be between 1 and 10485760, not {length}"
                        ),
                    )),
                }
            }
            Some(ast::CharacterLength::Max) => Err(SqlError::unsupported("length MAX")),
        }
    };
    Ok(match data_type {
        D::Bool | D::Boolean => SqlType::Bool,
        D::SmallInt(_) | D::Int2(_) => SqlType::SmallInt,
        D::Int(_) | D::Integer(_) | D::Int4(_) => SqlType::Int,
        D::BigInt(_) | D::Int8(_) => SqlType::BigInt,
        D::Real | D::Float4 => SqlType::Real,
        D::DoublePrecision | D::Float8 | D::Double(ast::ExactNumberInfo::None) => SqlType::Double,
        D::Float(info) => match info {
            ast::ExactNumberInfo::None => SqlType::Double,
            ast::ExactNumberInfo::Precision(p) if (1..=24).contains(p) => SqlType::Real,
            ast::ExactNumberInfo::Precision(p) if (25..=53).contains(p) => SqlType::Double,
            _ => {
                return Err(SqlError::new(
                    sqlstate::INVALID_PARAMETER_VALUE,
                    "precision for type float must be between 1 and 53 bits",
                ));
            }
        },
        D::Text | D::String(None) => SqlType::Text,
        D::Varchar(len) | D::CharacterVarying(len) | D::CharVarying(len) => {
            SqlType::Varchar(length(len)?)
        }
        D::Char(len) | D::Character(len) => SqlType::Char(length(len)?.unwrap_or(1)),
        D::Custom(name, modifiers) if modifiers.is_empty() => {
            match name.to_string().to_lowercase().as_str() {
                "int2" => SqlType::SmallInt,
                "int4" => SqlType::Int,
                "int8" => SqlType::BigInt,
                "float4" => SqlType::Real,
                "float8" => SqlType::Double,
                "bool" => SqlType::Bool,
                "bpchar" => SqlType::Char(1),
                other => {
                    return Err(SqlError::new(
                        sqlstate::UNDEFINED_OBJECT,
                        format!("type \"{other}\" does not exist"),
                    ));
                }
            }
        }
        other => return Err(SqlError::unsupported(format!("type {other}"))),
    })
}

/// Binds an AST expression in `scope`. Recursion grows the stack on demand (`recursive`),
/// so deep expressions cannot overflow a small thread stack.
#[recursive::recursive]
pub fn bind(expr: &ast::Expr, scope: &Scope) -> SqlResult<Typed> {
    use ast::Expr as E;
    let _depth = scope.enter()?;
    match expr {
        E::Identifier(ident) => scope.column(None, &ident_name(ident)),
        E::CompoundIdentifier(parts) => match parts.as_slice() {
            [table, column] => scope.column(Some(&ident_name(table)), &ident_name(column)),
            _ => Err(SqlError::unsupported(format!("qualified name {expr}"))),
        },
        E::Value(v) => bind_value(&v.value),
        E::Nested(inner) => bind(inner, scope),
        E::BinaryOp { left, op, right } => bind_binary(left, op, right, scope),
        E::UnaryOp { op, expr: inner } => bind_unary(*op, inner, scope),
        E::IsNull(inner) | E::IsNotNull(inner) => {
            let typed = bind(inner, scope)?;
            let negated = matches!(expr, E::IsNotNull(_));
            Ok(Typed::known(
                Expr::IsNull {
                    expr: Box::new(typed.expr),
                    negated,
                },
                SqlType::Bool,
            ))
        }
        E::IsTrue(inner) | E::IsNotTrue(inner) | E::IsFalse(inner) | E::IsNotFalse(inner) => {
            let value = matches!(expr, E::IsTrue(_) | E::IsNotTrue(_));
            let negated = matches!(expr, E::IsNotTrue(_) | E::IsNotFalse(_));
            let condition = bind(inner, scope)?.into_condition("IS TRUE/FALSE")?;
            Ok(Typed::known(
                Expr::IsBool {
                    expr: Box::new(condition),
                    value,
                    negated,
                },
                SqlType::Bool,
            ))
        }
        E::Between {
            expr: inner,
            negated,
            low,
            high,
        } => {
            let tests = [(CmpOp::GtEq, low.as_ref()), (CmpOp::LtEq, high.as_ref())];
            let both = bind_each(inner, &tests, true, scope)?;
            let expr = if *negated {
                Expr::Not(Box::new(both))
            } else {
                both
            };
            Ok(Typed::known(expr, SqlType::Bool))
        }
        E::In {
            expr: inner,
            target: ast::InTarget::List(list),
            negated,
            global: false,
        } => {
            if list.is_empty() {
                return Err(SqlError::new(sqlstate::SYNTAX_ERROR, "empty IN list"));
            }
            if let ast::Expr::Tuple(_) = inner.as_ref() {
                // `(a, b) IN ((1, 2), …)`: any of the row comparisons.
                let mut any: Option<Expr> = None;
                for item in list {
                    let test = bind_compare(inner, CmpOp::Eq, item, scope)?;
                    any = Some(match any {
                        None => test,
                        Some(a) => Expr::Or(Box::new(a), Box::new(test)),
                    });
                }
                let any = any.expect("the list is not empty");
                let expr = if *negated {
                    Expr::Not(Box::new(any))
                } else {
                    any
                };
                return Ok(Typed::known(expr, SqlType::Bool));
            }
            let tests: Vec<(CmpOp, &ast::Expr)> =
                list.iter().map(|item| (CmpOp::Eq, item)).collect();
            let any = bind_each(inner, &tests, false, scope)?;
            let expr = if *negated {
                Expr::Not(Box::new(any))
            } else {
                any
            };
            Ok(Typed::known(expr, SqlType::Bool))
        }
        E::Cast {
            expr: inner,
            data_type,
            format: None,
            ..
        } => {
            let to = bind_type(data_type)?;
            let typed = bind(inner, scope)?;
            match typed.ty {
                ExprType::Unknown(None) => Ok(Typed::known(Expr::Const(Value::Null), to)),
                ExprType::Unknown(Some(text)) if to.is_string() => {
                    let value = convert(Value::Text(text), SqlType::Text, to, true)?;
                    Ok(Typed::known(Expr::Const(value), to))
                }
                ExprType::Unknown(Some(text)) => {
                    Ok(Typed::known(Expr::Const(parse_text(&text, to)?), to))
                }
                ExprType::Known(from) => {
                    // Reject impossible casts at bind time, like PostgreSQL.
                    let castable = from.family() == to.family()
                        || from.is_string()
                        || to.is_string()
                        || (from == SqlType::Int && to == SqlType::Bool)
                        || (from == SqlType::Bool && to == SqlType::Int);
                    if !castable {
                        return Err(SqlError::new(
                            sqlstate::CANNOT_COERCE,
                            format!("cannot cast type {} to {}", from.pg_name(), to.pg_name()),
                        ));
                    }
                    let cast = Expr::Cast {
                        expr: Box::new(typed.expr),
                        from,
                        to,
                        explicit: true,
                    };
                    Ok(Typed::known(cast, to))
                }
            }
        }
        E::Case {
            operand,
            conditions,
            else_result,
            ..
        } => bind_case(
            operand.as_deref(),
            conditions,
            else_result.as_deref(),
            scope,
        ),
        E::Function(f) => bind_function(f, scope),
        E::Like {
            negated,
            any: false,
            expr: inner,
            pattern,
            escape_char,
        }
        | E::ILike {
            negated,
            any: false,
            expr: inner,
            pattern,
            escape_char,
        } => {
            let case_insensitive = matches!(expr, E::ILike { .. });
            let modes = (*negated, case_insensitive);
            bind_like(inner, pattern, escape_char.as_deref(), modes, scope)
        }
        E::Ceil {
            expr: inner,
            field: ast::CeilFloorKind::DateTimeField(ast::DateTimeField::NoDateTime),
        } => functions::bind_scalar("ceil", vec![bind(inner, scope)?]),
        E::Floor {
            expr: inner,
            field: ast::CeilFloorKind::DateTimeField(ast::DateTimeField::NoDateTime),
        } => functions::bind_scalar("floor", vec![bind(inner, scope)?]),
        E::Position { expr: sub, r#in } => {
            functions::bind_scalar("strpos", vec![bind(r#in, scope)?, bind(sub, scope)?])
        }
        E::Substring {
            expr: inner,
            substring_from,
            substring_for,
            ..
        } => {
            let mut args = vec![bind(inner, scope)?];
            args.push(match substring_from {
                Some(from) => bind(from, scope)?,
                None => Typed::known(Expr::Const(Value::Int(1)), SqlType::Int),
            });
            if let Some(count) = substring_for {
                args.push(bind(count, scope)?);
            }
            functions::bind_scalar("substr", args)
        }
        E::Trim {
            expr: inner,
            trim_where,
            trim_what,
            trim_characters,
        } if trim_characters
            .as_ref()
            .is_none_or(|c| c.len() == 1 && trim_what.is_none()) =>
        {
            let name = match trim_where {
                None | Some(ast::TrimWhereField::Both) => "btrim",
                Some(ast::TrimWhereField::Leading) => "ltrim",
                Some(ast::TrimWhereField::Trailing) => "rtrim",
            };
            let mut args = vec![bind(inner, scope)?];
            if let Some(what) = trim_what {
                args.push(bind(what, scope)?);
            }
            if let Some([characters]) = trim_characters.as_deref() {
                args.push(bind(characters, scope)?);
            }
            functions::bind_scalar(name, args)
        }
        E::Subquery(query) => bind_subquery(query, SubqueryKind::Scalar, scope),
        E::Exists { subquery, negated } => {
            let exists = bind_subquery(subquery, SubqueryKind::Exists, scope)?;
            Ok(if *negated {
                Typed::known(Expr::Not(Box::new(exists.expr)), SqlType::Bool)
            } else {
                exists
            })
        }
        E::In {
            expr: operand,
            target: ast::InTarget::Subquery(subquery),
            negated,
            global: false,
        } => bind_in_subquery(operand, subquery, CmpOp::Eq, false, *negated, scope),
        E::AnyOp {
            left,
            compare_op,
            right,
            ..
        }
        | E::AllOp {
            left,
            compare_op,
            right,
        } => {
            let all = matches!(expr, E::AllOp { .. });
            let E::Subquery(query) = right.as_ref() else {
                return Err(SqlError::unsupported(format!(
                    "{} over an array (only over a subquery)",
                    if all { "ALL" } else { "ANY" }
                )));
            };
            let op = match compare_op {
                ast::BinaryOperator::Eq => CmpOp::Eq,
                ast::BinaryOperator::NotEq => CmpOp::NotEq,
                ast::BinaryOperator::Lt => CmpOp::Lt,
                ast::BinaryOperator::LtEq => CmpOp::LtEq,
                ast::BinaryOperator::Gt => CmpOp::Gt,
                ast::BinaryOperator::GtEq => CmpOp::GtEq,
                other => {
                    return Err(SqlError::unsupported(format!(
                        "operator {other} with ANY/ALL"
                    )));
                }
            };
            bind_in_subquery(left, query, op, all, false, scope)
        }
        E::IsDistinctFrom(left, right) | E::IsNotDistinctFrom(left, right) => {
            let negated = matches!(expr, E::IsNotDistinctFrom(..));
            let compared = compare(bind(left, scope)?, CmpOp::Eq, bind(right, scope)?)?;
            let Expr::Compare {
                left,
                right,
                blank_padded,
                ..
            } = compared
            else {
                unreachable!("compare builds a comparison")
            };
            Ok(Typed::known(
                Expr::DistinctFrom {
                    left,
                    right,
                    blank_padded,
                    negated,
                },
                SqlType::Bool,
            ))
        }
        other => Err(SqlError::unsupported(format!("expression {other}"))),
    }
}

/// A subquery in an expression: bound by the query binder in a scope whose parent is
/// `scope`, and registered with `scope` (see [`crate::scope`]).
fn bind_subquery(query: &ast::Query, kind: SubqueryKind, scope: &Scope) -> SqlResult<Typed> {
    let Some(binder) = scope.binder() else {
        return Err(SqlError::unsupported("a subquery here"));
    };
    let bound = binder.bind_subquery(query, scope)?;
    let ty = match kind {
        SubqueryKind::Scalar => {
            if bound.columns.len() != 1 {
                return Err(SqlError::new(
                    sqlstate::SYNTAX_ERROR,
                    "subquery must return only one column",
                ));
            }
            bound.columns[0].1
        }
        _ => SqlType::Bool,
    };
    let correlated = bound.plan.refers_outside(1);
    let reference = scope.add_subquery(SubqueryDef {
        plan: bound.plan,
        kind,
        correlated,
        outer_keys: Vec::new(),
        missing: None,
    })?;
    Ok(Typed::known(reference, ty))
}

/// `operand [NOT] IN (query)`, and `operand op ANY|ALL (query)`.
fn bind_in_subquery(
    operand: &ast::Expr,
    query: &ast::Query,
    op: CmpOp,
    all: bool,
    negated: bool,
    scope: &Scope,
) -> SqlResult<Typed> {
    let Some(binder) = scope.binder() else {
        return Err(SqlError::unsupported("a subquery here"));
    };
    let operand = bind(operand, scope)?;
    let bound = binder.bind_subquery(query, scope)?;
    if bound.columns.len() != 1 {
        return Err(SqlError::new(
            sqlstate::SYNTAX_ERROR,
            "subquery has too many columns",
        ));
    }
    let column_ty = bound.columns[0].1;
    // The operand is compared with the subquery's values as `op` would compare them.
    let probe = compare(
        operand.clone(),
        op,
        Typed::known(Expr::Const(Value::Null), column_ty),
    )?;
    let Expr::Compare {
        left, blank_padded, ..
    } = probe
    else {
        unreachable!("compare builds a comparison")
    };
    let correlated = bound.plan.refers_outside(1);
    let reference = scope.add_subquery(SubqueryDef {
        plan: bound.plan,
        kind: SubqueryKind::In {
            operand: *left,
            op,
            all,
            negated,
            blank_padded,
        },
        correlated,
        outer_keys: Vec::new(),
        missing: None,
    })?;
    Ok(Typed::known(reference, SqlType::Bool))
}

/// Functions and aggregates PostgreSQL has that RegionDB does not have yet: refused as not
/// supported (0A000), where a name PostgreSQL does not know either is an undefined function
/// (42883), as PostgreSQL reports it.
const POSTGRESQL_FUNCTIONS: &[&str] = &[
    "abs",
    "avg",
    "bool_and",
    "bool_or",
    "ceil",
    "ceiling",
    "char_length",
    "coalesce",
    "concat",
    "count",
    "current_date",
    "current_timestamp",
    "date_part",
    "date_trunc",
    "every",
    "extract",
    "floor",
    "generate_series",
    "greatest",
    "least",
    "left",
    "length",
    "lower",
    "ltrim",
    "max",
    "min",
    "mod",
    "now",
    "nullif",
    "position",
    "power",
    "random",
    "replace",
    "right",
    "round",
    "rtrim",
    "sign",
    "sqrt",
    "string_agg",
    "strpos",
    "substr",
    "substring",
    "sum",
    "trim",
    "trunc",
    "upper",
    "version",
];

fn function_not_available(name: &str) -> SqlError {
    let plain = name.rsplit('.').next().unwrap_or(name).to_ascii_lowercase();
    if POSTGRESQL_FUNCTIONS.contains(&plain.as_str()) {
        return SqlError::unsupported(format!(
            "function {plain}() (RegionDB has no functions yet)"
        ));
    }
    SqlError::new(
        sqlstate::UNDEFINED_FUNCTION,
        format!("function {name}() does not exist"),
    )
}

/// The type several expressions resolve to together (`CASE` results, `COALESCE`
/// arguments), by PostgreSQL's rules for UNION, CASE and related constructs: untyped literals
/// take the others' type (all untyped: text); numbers widen to the widest; strings are
/// text; other types must match. `context` names the construct in the error.
pub fn common_type(types: &[ExprType], context: &str) -> SqlResult<SqlType> {
    let known: Vec<SqlType> = types
        .iter()
        .filter_map(|t| match t {
            ExprType::Known(t) => Some(*t),
            ExprType::Unknown(_) => None,
        })
        .collect();
    let Some(&first) = known.first() else {
        return Ok(SqlType::Text);
    };
    let mut common = first;
    for &ty in &known[1..] {
        common = if common == ty {
            common
        } else if common.is_numeric() && ty.is_numeric() {
            wider_numeric(common, ty)
        } else if common.is_string() && ty.is_string() {
            SqlType::Text
        } else {
            return Err(SqlError::mismatch(format!(
                "{context} types {} and {} cannot be matched",
                common.pg_name(),
                ty.pg_name()
            )));
        };
    }
    Ok(common)
}

/// `typed` as a value of `target` (a type [`common_type`] chose for it).
pub fn coerce_to(typed: Typed, target: SqlType) -> SqlResult<Expr> {
    match typed.ty {
        ExprType::Unknown(None) => Ok(Expr::Const(Value::Null)),
        ExprType::Unknown(Some(text)) => Ok(Expr::Const(parse_text(&text, target)?)),
        ExprType::Known(from) if from == target => Ok(typed.expr),
        ExprType::Known(from) => Ok(Expr::Cast {
            expr: Box::new(typed.expr),
            from,
            to: target,
            explicit: false,
        }),
    }
}

fn bind_case(
    operand: Option<&ast::Expr>,
    conditions: &[ast::CaseWhen],
    else_result: Option<&ast::Expr>,
    scope: &Scope,
) -> SqlResult<Typed> {
    let operand = operand.map(|o| bind(o, scope)).transpose()?;
    let mut tests = Vec::with_capacity(conditions.len());
    let mut results = Vec::with_capacity(conditions.len() + 1);
    for when in conditions {
        let test = match &operand {
            Some(operand) => compare(operand.clone(), CmpOp::Eq, bind(&when.condition, scope)?)?,
            None => bind(&when.condition, scope)?.into_condition("CASE/WHEN")?,
        };
        tests.push(test);
        results.push(bind(&when.result, scope)?);
    }
    let otherwise = match else_result {
        Some(e) => bind(e, scope)?,
        None => Typed {
            expr: Expr::Const(Value::Null),
            ty: ExprType::Unknown(None),
        },
    };
    results.push(otherwise);
    let types: Vec<ExprType> = results.iter().map(|r| r.ty.clone()).collect();
    let ty = common_type(&types, "CASE")?;
    let mut results = results
        .into_iter()
        .map(|r| coerce_to(r, ty))
        .collect::<SqlResult<Vec<Expr>>>()?;
    let otherwise = results.pop().unwrap_or(Expr::Const(Value::Null));
    Ok(Typed::known(
        Expr::Case {
            branches: tests.into_iter().zip(results).collect(),
            otherwise: Box::new(otherwise),
        },
        ty,
    ))
}

fn bind_like(
    expr: &ast::Expr,
    pattern: &ast::Expr,
    escape: Option<&ast::Expr>,
    (negated, case_insensitive): (bool, bool),
    scope: &Scope,
) -> SqlResult<Typed> {
    let op = match (case_insensitive, negated) {
        (false, false) => "~~",
        (false, true) => "!~~",
        (true, false) => "~~*",
        (true, true) => "!~~*",
    };
    let (value, pattern) = (bind(expr, scope)?, bind(pattern, scope)?);
    let is_string = |t: &ExprType| match t {
        ExprType::Known(t) => t.is_string(),
        ExprType::Unknown(_) => true,
    };
    if !is_string(&value.ty) || !is_string(&pattern.ty) {
        return Err(no_operator(op, &value.ty, &pattern.ty));
    }
    let pad = match value.ty {
        ExprType::Known(SqlType::Char(n)) => Some(n),
        _ => None,
    };
    let escape = match escape {
        None => Some('\\'),
        Some(e) => match bind(e, scope)? {
            Typed {
                ty: ExprType::Unknown(Some(text)),
                ..
            } => {
                let mut chars = text.chars();
                match (chars.next(), chars.next()) {
                    (None, _) => None,
                    (Some(c), None) => Some(c),
                    _ => return Err(invalid_escape()),
                }
            }
            _ => {
                return Err(SqlError::unsupported(
                    "an ESCAPE that is not a string literal",
                ));
            }
        },
    };
    Ok(Typed::known(
        Expr::Like {
            expr: Box::new(coerce_to(value, SqlType::Text)?),
            pattern: Box::new(coerce_to(pattern, SqlType::Text)?),
            escape,
            case_insensitive,
            negated,
            pad,
        },
        SqlType::Bool,
    ))
}

fn invalid_escape() -> SqlError {
    SqlError::new(
        "22025",
        "invalid escape string (ESCAPE takes one character, or none)",
    )
}

/// Whether `text` matches the LIKE `pattern` (`%`: any characters, `_`: one, `escape`: the
/// next character literally). Greedy with backtracking to the last `%`: linear in practice,
/// never exponential.
fn like_matches(text: &[char], pattern: &str, escape: Option<char>) -> SqlResult<bool> {
    enum Token {
        Any,
        One,
        Lit(char),
        /// An escape with nothing after it: an error once matching gets there (PostgreSQL
        /// reports it only then).
        DanglingEscape,
    }
    let mut tokens = Vec::new();
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        tokens.push(match c {
            c if Some(c) == escape => chars.next().map_or(Token::DanglingEscape, Token::Lit),
            '%' => Token::Any,
            '_' => Token::One,
            c => Token::Lit(c),
        });
    }
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match tokens.get(p) {
            Some(Token::Any) => {
                star = Some((p, t));
                p += 1;
            }
            Some(Token::One) => {
                t += 1;
                p += 1;
            }
            Some(Token::Lit(c)) if *c == text[t] => {
                t += 1;
                p += 1;
            }
            Some(Token::DanglingEscape) => {
                return Err(SqlError::new(
                    "22025",
                    "LIKE pattern must not end with escape character",
                ));
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return Ok(false),
            },
        }
    }
    Ok(tokens[p..].iter().all(|token| matches!(token, Token::Any)))
}

/// The plain expression arguments of a function call; anything else is refused.
pub(crate) fn function_args<'e>(f: &'e ast::Function, name: &str) -> SqlResult<Vec<&'e ast::Expr>> {
    let unsupported = || SqlError::unsupported(format!("this form of {name}()"));
    if f.filter.is_some() || f.over.is_some() || !f.within_group.is_empty() {
        return Err(unsupported());
    }
    let ast::FunctionArguments::List(list) = &f.args else {
        return Err(unsupported());
    };
    if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
        return Err(unsupported());
    }
    list.args
        .iter()
        .map(|arg| match arg {
            ast::FunctionArg::Unnamed(ast::FunctionArgExpr::Expr(e)) => Ok(e),
            _ => Err(unsupported()),
        })
        .collect()
}

fn bind_function(f: &ast::Function, scope: &Scope) -> SqlResult<Typed> {
    let name = match f.name.0.as_slice() {
        [ast::ObjectNamePart::Identifier(ident)] => ident_name(ident),
        _ => return Err(function_not_available(&f.name.to_string())),
    };
    let wrong_arguments = |types: &[ExprType]| {
        let listed: Vec<String> = types.iter().map(ExprType::name).collect();
        SqlError::new(
            sqlstate::UNDEFINED_FUNCTION,
            format!("function {name}({}) does not exist", listed.join(", ")),
        )
    };
    match name.as_str() {
        "coalesce" => {
            let args = function_args(f, &name)?
                .into_iter()
                .map(|a| bind(a, scope))
                .collect::<SqlResult<Vec<Typed>>>()?;
            if args.is_empty() {
                return Err(SqlError::new(
                    sqlstate::SYNTAX_ERROR,
                    "COALESCE needs at least one argument",
                ));
            }
            let types: Vec<ExprType> = args.iter().map(|a| a.ty.clone()).collect();
            let ty = common_type(&types, "COALESCE")?;
            let args = args
                .into_iter()
                .map(|a| coerce_to(a, ty))
                .collect::<SqlResult<Vec<Expr>>>()?;
            Ok(Typed::known(Expr::Coalesce(args), ty))
        }
        "nullif" => {
            let [value, equals] = function_args(f, &name)?[..] else {
                return Err(SqlError::new(
                    sqlstate::SYNTAX_ERROR,
                    "NULLIF takes two arguments",
                ));
            };
            let (value, equals) = (bind(value, scope)?, bind(equals, scope)?);
            let ty = common_type(&[value.ty.clone(), equals.ty.clone()], "NULLIF")?;
            // The result has the first argument's type (text if it is untyped).
            let result_ty = match value.ty {
                ExprType::Known(t) => t,
                ExprType::Unknown(_) => ty,
            };
            let value_expr = coerce_to(value, result_ty)?;
            let equals = coerce_to(equals, ty)?;
            let compared = if result_ty == ty {
                value_expr.clone()
            } else {
                Expr::Cast {
                    expr: Box::new(value_expr.clone()),
                    from: result_ty,
                    to: ty,
                    explicit: false,
                }
            };
            Ok(Typed::known(
                Expr::NullIf {
                    value: Box::new(value_expr),
                    equals: Box::new(Expr::Compare {
                        op: CmpOp::Eq,
                        left: Box::new(compared),
                        right: Box::new(equals),
                        blank_padded: false,
                    }),
                },
                result_ty,
            ))
        }
        "abs" => {
            let args = function_args(f, &name)?;
            let [arg] = args[..] else {
                let types = args
                    .iter()
                    .map(|a| bind(a, scope).map(|t| t.ty))
                    .collect::<SqlResult<Vec<_>>>()?;
                return Err(wrong_arguments(&types));
            };
            let arg = bind(arg, scope)?;
            let ty = match &arg.ty {
                ExprType::Known(t) if t.is_numeric() => *t,
                // An untyped literal is read as a number (PostgreSQL picks double precision).
                ExprType::Unknown(_) => SqlType::Double,
                other => return Err(wrong_arguments(std::slice::from_ref(other))),
            };
            let expr = coerce_to(arg, ty)?;
            Ok(Typed::known(
                Expr::Abs {
                    expr: Box::new(expr),
                    ty,
                },
                ty,
            ))
        }
        "lower" | "upper" | "length" | "char_length" | "character_length" | "replace" => {
            let args = function_args(f, &name)?
                .into_iter()
                .map(|a| bind(a, scope))
                .collect::<SqlResult<Vec<Typed>>>()?;
            let types: Vec<ExprType> = args.iter().map(|a| a.ty.clone()).collect();
            let arity = if name == "replace" { 3 } else { 1 };
            let all_strings = types.iter().all(|t| match t {
                ExprType::Known(t) => t.is_string(),
                ExprType::Unknown(_) => true,
            });
            if args.len() != arity || !all_strings {
                return Err(wrong_arguments(&types));
            }
            let blank_padded = matches!(types[0], ExprType::Known(SqlType::Char(_)));
            let (func, ty) = match name.as_str() {
                "lower" => (TextFn::Lower, SqlType::Text),
                "upper" => (TextFn::Upper, SqlType::Text),
                "replace" => (TextFn::Replace, SqlType::Text),
                _ => (TextFn::Length { blank_padded }, SqlType::Int),
            };
            let args = args
                .into_iter()
                .map(|a| coerce_to(a, SqlType::Text))
                .collect::<SqlResult<Vec<Expr>>>()?;
            Ok(Typed::known(Expr::Text { func, args }, ty))
        }
        "ceil" | "ceiling" | "floor" | "round" | "mod" | "substr" | "substring" | "strpos"
        | "concat" | "btrim" | "ltrim" | "rtrim" => {
            let args = function_args(f, &name)?
                .into_iter()
                .map(|a| bind(a, scope))
                .collect::<SqlResult<Vec<Typed>>>()?;
            functions::bind_scalar(&name, args)
        }
        "count" | "sum" | "avg" | "min" | "max" | "bool_and" | "bool_or" | "every"
        | "string_agg" => aggregate::bind_aggregate(f, &name, scope),
        "greatest" | "least" => {
            let args = function_args(f, &name)?
                .into_iter()
                .map(|a| bind(a, scope))
                .collect::<SqlResult<Vec<Typed>>>()?;
            if args.is_empty() {
                return Err(SqlError::new(
                    sqlstate::SYNTAX_ERROR,
                    format!("{} needs at least one argument", name.to_uppercase()),
                ));
            }
            let types: Vec<ExprType> = args.iter().map(|a| a.ty.clone()).collect();
            let ty = common_type(&types, &name.to_uppercase())?;
            let args = args
                .into_iter()
                .map(|a| coerce_to(a, ty))
                .collect::<SqlResult<Vec<Expr>>>()?;
            Ok(Typed::known(
                Expr::Extreme {
                    args,
                    greatest: name == "greatest",
                },
                ty,
            ))
        }
        _ => Err(function_not_available(&name)),
    }
}

fn bind_unary(op: ast::UnaryOperator, inner: &ast::Expr, scope: &Scope) -> SqlResult<Typed> {
    let typed = bind(inner, scope)?;
    match op {
        ast::UnaryOperator::Not => {
            let condition = typed.into_condition("NOT")?;
            Ok(Typed::known(Expr::Not(Box::new(condition)), SqlType::Bool))
        }
        ast::UnaryOperator::Minus | ast::UnaryOperator::Plus => {
            let minus = op == ast::UnaryOperator::Minus;
            let (expr, ty) = match typed.ty {
                ExprType::Known(t) if t.is_numeric() => (typed.expr, t),
                ExprType::Unknown(Some(text)) => (
                    Expr::Const(parse_text(&text, SqlType::Double)?),
                    SqlType::Double,
                ),
                other => {
                    return Err(SqlError::new(
                        sqlstate::UNDEFINED_FUNCTION,
                        format!(
                            "operator does not exist: {} {}",
                            if minus { "-" } else { "+" },
                            other.name()
                        ),
                    ));
                }
            };
            if !minus {
                return Ok(Typed::known(expr, ty));
            }
            // Fold `-literal` so that `-2147483648` is an integer, as the literal's type says.
            if let Expr::Const(Value::Int(i)) = &expr
                && let Some(n) = i.checked_neg()
            {
                let ty = if i32::try_from(n).is_ok() {
                    SqlType::Int
                } else {
                    ty
                };
                return Ok(Typed::known(Expr::Const(Value::Int(n)), ty));
            }
            Ok(Typed::known(
                Expr::Neg {
                    expr: Box::new(expr),
                    ty,
                },
                ty,
            ))
        }
        other => Err(SqlError::unsupported(format!("operator {other}"))),
    }
}

fn bind_compare(left: &ast::Expr, op: CmpOp, right: &ast::Expr, scope: &Scope) -> SqlResult<Expr> {
    if let (ast::Expr::Tuple(left), ast::Expr::Tuple(right)) = (left, right) {
        return bind_row_compare(left, op, right, scope);
    }
    let left = bind(left, scope)?;
    let right = bind(right, scope)?;
    compare(left, op, right)
}

/// `(a1, a2, …) op (b1, b2, …)`, element by element as PostgreSQL compares rows: `=` if
/// all pairs are equal, `<>` if one is not, and the ordering operators by the first pair that
/// is not equal (NULL if that pair has a NULL).
fn bind_row_compare(
    left: &[ast::Expr],
    op: CmpOp,
    right: &[ast::Expr],
    scope: &Scope,
) -> SqlResult<Expr> {
    if left.len() != right.len() {
        return Err(SqlError::new(
            sqlstate::SYNTAX_ERROR,
            "unequal number of entries in row expressions",
        ));
    }
    let pair = |i: usize, op: CmpOp| bind_compare(&left[i], op, &right[i], scope);
    let and = |a: Expr, b: Expr| Expr::And(Box::new(a), Box::new(b));
    let or = |a: Expr, b: Expr| Expr::Or(Box::new(a), Box::new(b));
    let n = left.len();
    match op {
        CmpOp::Eq | CmpOp::NotEq => {
            let mut result = pair(0, op)?;
            for i in 1..n {
                let next = pair(i, op)?;
                result = if op == CmpOp::Eq {
                    and(result, next)
                } else {
                    or(result, next)
                };
            }
            Ok(result)
        }
        CmpOp::Lt | CmpOp::LtEq | CmpOp::Gt | CmpOp::GtEq => {
            let strict = if matches!(op, CmpOp::Lt | CmpOp::LtEq) {
                CmpOp::Lt
            } else {
                CmpOp::Gt
            };
            // From the last pair back: (a_i strict b_i) OR (a_i = b_i AND rest).
            let mut result = pair(n - 1, op)?;
            for i in (0..n - 1).rev() {
                result = or(pair(i, strict)?, and(pair(i, CmpOp::Eq)?, result));
            }
            Ok(result)
        }
    }
}

/// `left op right`, with PostgreSQL's coercion of untyped literals (42883 for unrelated
/// types).
pub fn compare(left: Typed, op: CmpOp, right: Typed) -> SqlResult<Expr> {
    let literal = (
        matches!(left.ty, ExprType::Unknown(_)),
        matches!(right.ty, ExprType::Unknown(_)),
    );
    let (mut l, lt, mut r, rt) = match (&left.ty, &right.ty) {
        (ExprType::Unknown(_), ExprType::Unknown(_)) => {
            let (l, lt) = left.coerce_to_operand(SqlType::Text)?;
            let (r, rt) = right.coerce_to_operand(SqlType::Text)?;
            (l, lt, r, rt)
        }
        (ExprType::Unknown(_), ExprType::Known(t)) => {
            let t = *t;
            let (l, lt) = left.coerce_to_operand(t)?;
            (l, lt, right.expr, t)
        }
        (ExprType::Known(t), _) => {
            let t = *t;
            let (r, rt) = right.coerce_to_operand(t)?;
            (left.expr, t, r, rt)
        }
    };
    if lt.family() != rt.family() {
        return Err(no_operator(
            op.symbol(),
            &ExprType::Known(lt),
            &ExprType::Known(rt),
        ));
    }
    // character(n) compares ignoring trailing blanks with character(n), varchar and literals
    // (PostgreSQL resolves `bpchar = varchar` to `bpchar = bpchar`); against text it is
    // converted to text (its padding dropped) and compared as text, as PostgreSQL resolves
    // `bpchar = text` to `text = text`.
    let (left_char, right_char) = (
        matches!(lt, SqlType::Char(_)),
        matches!(rt, SqlType::Char(_)),
    );
    let literal = (
        literal.0 || matches!(lt, SqlType::Varchar(_)),
        literal.1 || matches!(rt, SqlType::Varchar(_)),
    );
    let to_text = |e: Expr, from: SqlType| Expr::Cast {
        expr: Box::new(e),
        from,
        to: SqlType::Text,
        explicit: false,
    };
    let blank_padded = match (left_char, right_char) {
        (true, true) => true,
        (true, false) if literal.1 => true,
        (false, true) if literal.0 => true,
        (true, false) => {
            l = to_text(l, lt);
            false
        }
        (false, true) => {
            r = to_text(r, rt);
            false
        }
        (false, false) => false,
    };
    Ok(Expr::Compare {
        op,
        left: Box::new(l),
        right: Box::new(r),
        blank_padded,
    })
}

/// Binds `operand` once and each `(operator, value)` test against it (see
/// [`Expr::CompareEach`]). An untyped operand takes the type of the first typed value.
fn bind_each(
    operand: &ast::Expr,
    tests: &[(CmpOp, &ast::Expr)],
    all: bool,
    scope: &Scope,
) -> SqlResult<Expr> {
    let operand = bind(operand, scope)?;
    let values = tests
        .iter()
        .map(|(_, e)| bind(e, scope))
        .collect::<SqlResult<Vec<_>>>()?;
    let target = match &operand.ty {
        ExprType::Known(t) => *t,
        ExprType::Unknown(_) => values
            .iter()
            .find_map(|v| match v.ty {
                ExprType::Known(t) => Some(t),
                ExprType::Unknown(_) => None,
            })
            .unwrap_or(SqlType::Text),
    };
    let operand_ty = operand.ty.clone();
    let (operand, ty) = operand.coerce_to_operand(target)?;
    let mut bound = Vec::with_capacity(values.len());
    for ((op, _), value) in tests.iter().zip(values) {
        let value_ty = value.ty.clone();
        let (expr, vt) = value.coerce_to_operand(ty)?;
        if ty.family() != vt.family() {
            return Err(no_operator(op.symbol(), &operand_ty, &value_ty));
        }
        let blank_padded = matches!(ty, SqlType::Char(_)) || matches!(vt, SqlType::Char(_));
        bound.push((*op, expr, blank_padded));
    }
    Ok(Expr::CompareEach {
        operand: Box::new(operand),
        tests: bound,
        all,
    })
}

/// SQL comparison of two values (`None`: unknown, a NULL was involved).
pub fn compare_values(l: &Value, r: &Value, blank_padded: bool) -> Option<Ordering> {
    match (l, r, blank_padded) {
        (Value::Text(a), Value::Text(b), true) => {
            Some(a.trim_end_matches(' ').cmp(b.trim_end_matches(' ')))
        }
        _ => l.sql_cmp(r),
    }
}

pub(crate) fn wider_numeric(a: SqlType, b: SqlType) -> SqlType {
    if a.is_float() || b.is_float() {
        if a == SqlType::Real && b == SqlType::Real {
            SqlType::Real
        } else {
            SqlType::Double
        }
    } else if a == SqlType::BigInt || b == SqlType::BigInt {
        SqlType::BigInt
    } else if a == SqlType::Int || b == SqlType::Int {
        SqlType::Int
    } else {
        SqlType::SmallInt
    }
}

fn bind_binary(
    left: &ast::Expr,
    op: &ast::BinaryOperator,
    right: &ast::Expr,
    scope: &Scope,
) -> SqlResult<Typed> {
    use ast::BinaryOperator as B;
    let cmp = match op {
        B::Eq => Some(CmpOp::Eq),
        B::NotEq => Some(CmpOp::NotEq),
        B::Lt => Some(CmpOp::Lt),
        B::LtEq => Some(CmpOp::LtEq),
        B::Gt => Some(CmpOp::Gt),
        B::GtEq => Some(CmpOp::GtEq),
        _ => None,
    };
    if let Some(cmp) = cmp {
        return Ok(Typed::known(
            bind_compare(left, cmp, right, scope)?,
            SqlType::Bool,
        ));
    }
    let l = bind(left, scope)?;
    let r = bind(right, scope)?;
    match op {
        B::And | B::Or => {
            let name = if *op == B::And { "AND" } else { "OR" };
            let l = Box::new(l.into_condition(name)?);
            let r = Box::new(r.into_condition(name)?);
            let expr = if *op == B::And {
                Expr::And(l, r)
            } else {
                Expr::Or(l, r)
            };
            Ok(Typed::known(expr, SqlType::Bool))
        }
        B::StringConcat => {
            // One side must be a string (or an untyped literal): `1 || 2` has no operator.
            let stringy = |t: &ExprType| match t {
                ExprType::Known(t) => t.is_string(),
                ExprType::Unknown(_) => true,
            };
            if !stringy(&l.ty) && !stringy(&r.ty) {
                return Err(no_operator("||", &l.ty, &r.ty));
            }
            let (left_ty, right_ty) = (l.resolved_type(), r.resolved_type());
            Ok(Typed::known(
                Expr::Concat {
                    left: Box::new(l.expr),
                    left_ty,
                    right: Box::new(r.expr),
                    right_ty,
                },
                SqlType::Text,
            ))
        }
        B::Plus | B::Minus | B::Multiply | B::Divide | B::Modulo => {
            let arith = match op {
                B::Plus => ArithOp::Add,
                B::Minus => ArithOp::Sub,
                B::Multiply => ArithOp::Mul,
                B::Divide => ArithOp::Div,
                _ => ArithOp::Mod,
            };
            let (lty, rty) = (l.ty.clone(), r.ty.clone());
            let (le, lt, re, rt) = match (&l.ty, &r.ty) {
                (ExprType::Known(a), ExprType::Known(b)) => (l.expr, *a, r.expr, *b),
                (ExprType::Known(a), _) => {
                    let a = *a;
                    let (re, rt) = r.coerce_to_operand(a)?;
                    (l.expr, a, re, rt)
                }
                (_, ExprType::Known(b)) => {
                    let b = *b;
                    let (le, lt) = l.coerce_to_operand(b)?;
                    (le, lt, r.expr, b)
                }
                _ => return Err(no_operator(arith.symbol(), &lty, &rty)),
            };
            let ty = wider_numeric(lt, rt);
            if !lt.is_numeric() || !rt.is_numeric() || (arith == ArithOp::Mod && ty.is_float()) {
                return Err(no_operator(arith.symbol(), &lty, &rty));
            }
            Ok(Typed::known(
                Expr::Arith {
                    op: arith,
                    left: Box::new(le),
                    right: Box::new(re),
                    ty,
                },
                ty,
            ))
        }
        other => Err(SqlError::unsupported(format!("operator {other}"))),
    }
}

fn division_by_zero() -> SqlError {
    SqlError::new(sqlstate::DIVISION_BY_ZERO, "division by zero")
}

fn arith_int(op: ArithOp, a: i64, b: i64, ty: SqlType) -> SqlResult<Value> {
    let result = match op {
        ArithOp::Add => a.checked_add(b),
        ArithOp::Sub => a.checked_sub(b),
        ArithOp::Mul => a.checked_mul(b),
        ArithOp::Div if b == 0 => return Err(division_by_zero()),
        ArithOp::Div => a.checked_div(b),
        ArithOp::Mod if b == 0 => return Err(division_by_zero()),
        ArithOp::Mod => Some(a.checked_rem(b).unwrap_or(0)),
    };
    let v = result.ok_or_else(|| range_error(ty))?;
    convert(Value::Int(v), SqlType::BigInt, ty, false).map_err(|_| range_error(ty))
}

fn arith_float(op: ArithOp, a: f64, b: f64, ty: SqlType) -> SqlResult<Value> {
    let v = match op {
        ArithOp::Add => a + b,
        ArithOp::Sub => a - b,
        ArithOp::Mul => a * b,
        ArithOp::Div if b == 0.0 => return Err(division_by_zero()),
        ArithOp::Div => a / b,
        ArithOp::Mod => return Err(SqlError::unsupported("% on floating-point numbers")),
    };
    let v = if ty == SqlType::Real {
        v as f32 as f64
    } else {
        v
    };
    // Checked after rounding, so that `real` overflow is caught too.
    if v.is_infinite() && a.is_finite() && b.is_finite() {
        return Err(SqlError::out_of_range("value out of range: overflow"));
    }
    Ok(Value::Float(v))
}

fn as_float(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        _ => f64::NAN,
    }
}

fn to_bool(v: Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(b),
        _ => None,
    }
}

/// The columns an expression reads: a row's values, or values computed only when read (a
/// subquery's, see [`crate::exec`]'s Apply).
pub trait Columns {
    fn column(&self, index: usize) -> SqlResult<Value>;
}

impl Columns for &[Value] {
    fn column(&self, index: usize) -> SqlResult<Value> {
        Ok(self.get(index).cloned().unwrap_or(Value::Null))
    }
}

impl Expr {
    pub fn eval(&self, row: &[Value]) -> SqlResult<Value> {
        self.eval_in(&row)
    }

    /// Evaluates over columns that may be computed as they are read: only the branches
    /// evaluated read theirs (`CASE`, `AND`, `OR` and `COALESCE` stop early).
    #[recursive::recursive]
    pub fn eval_in(&self, row: &dyn Columns) -> SqlResult<Value> {
        Ok(match self {
            Expr::Const(v) => v.clone(),
            Expr::Column(i) => row.column(*i)?,
            Expr::Compare {
                op,
                left,
                right,
                blank_padded,
            } => {
                let (l, r) = (left.eval_in(row)?, right.eval_in(row)?);
                compare_values(&l, &r, *blank_padded)
                    .map_or(Value::Null, |o| Value::Bool(op.holds(o)))
            }
            Expr::Arith {
                op,
                left,
                right,
                ty,
            } => {
                let (l, r) = (left.eval_in(row)?, right.eval_in(row)?);
                match (&l, &r) {
                    (Value::Null, _) | (_, Value::Null) => Value::Null,
                    (Value::Int(a), Value::Int(b)) if ty.is_integer() => {
                        arith_int(*op, *a, *b, *ty)?
                    }
                    _ => arith_float(*op, as_float(&l), as_float(&r), *ty)?,
                }
            }
            Expr::Concat {
                left,
                left_ty,
                right,
                right_ty,
            } => {
                let (l, r) = (left.eval_in(row)?, right.eval_in(row)?);
                // character(n) loses its padding when it becomes text.
                let text = |v: Value, ty: SqlType| {
                    let s = v.to_text_cast(ty)?;
                    Some(if matches!(ty, SqlType::Char(_)) {
                        s.trim_end_matches(' ').to_string()
                    } else {
                        s
                    })
                };
                match (text(l, *left_ty), text(r, *right_ty)) {
                    (Some(a), Some(b)) => Value::Text(a + &b),
                    _ => Value::Null,
                }
            }
            Expr::Neg { expr, ty } => match expr.eval_in(row)? {
                Value::Int(i) => {
                    let n = i.checked_neg().ok_or_else(|| range_error(*ty))?;
                    convert(Value::Int(n), SqlType::BigInt, *ty, false)
                        .map_err(|_| range_error(*ty))?
                }
                Value::Float(f) => Value::Float(-f),
                _ => Value::Null,
            },
            Expr::Not(inner) => match to_bool(inner.eval_in(row)?) {
                Some(b) => Value::Bool(!b),
                None => Value::Null,
            },
            Expr::And(l, r) => {
                let a = to_bool(l.eval_in(row)?);
                if a == Some(false) {
                    return Ok(Value::Bool(false));
                }
                match (a, to_bool(r.eval_in(row)?)) {
                    (_, Some(false)) => Value::Bool(false),
                    (Some(true), Some(true)) => Value::Bool(true),
                    _ => Value::Null,
                }
            }
            Expr::Or(l, r) => {
                let a = to_bool(l.eval_in(row)?);
                if a == Some(true) {
                    return Ok(Value::Bool(true));
                }
                match (a, to_bool(r.eval_in(row)?)) {
                    (_, Some(true)) => Value::Bool(true),
                    (Some(false), Some(false)) => Value::Bool(false),
                    _ => Value::Null,
                }
            }
            Expr::CompareEach {
                operand,
                tests,
                all,
            } => {
                let value = operand.eval_in(row)?;
                let mut unknown = false;
                for (op, test, blank_padded) in tests {
                    match compare_values(&value, &test.eval_in(row)?, *blank_padded)
                        .map(|o| op.holds(o))
                    {
                        Some(holds) if holds != *all => return Ok(Value::Bool(holds)),
                        Some(_) => {}
                        None => unknown = true,
                    }
                }
                if unknown {
                    Value::Null
                } else {
                    Value::Bool(*all)
                }
            }
            Expr::IsNull { expr, negated } => Value::Bool(expr.eval_in(row)?.is_null() != *negated),
            Expr::IsBool {
                expr,
                value,
                negated,
            } => {
                let matches = to_bool(expr.eval_in(row)?) == Some(*value);
                Value::Bool(matches != *negated)
            }
            Expr::Cast {
                expr,
                from,
                to,
                explicit,
            } => convert(expr.eval_in(row)?, *from, *to, *explicit)?,
            Expr::Case {
                branches,
                otherwise,
            } => {
                for (test, result) in branches {
                    if test.is_true_in(row)? {
                        return result.eval_in(row);
                    }
                }
                otherwise.eval_in(row)?
            }
            Expr::Coalesce(args) => {
                for arg in args {
                    let value = arg.eval_in(row)?;
                    if !value.is_null() {
                        return Ok(value);
                    }
                }
                Value::Null
            }
            Expr::NullIf { value, equals } => match equals.eval_in(row)? {
                Value::Bool(true) => Value::Null,
                _ => value.eval_in(row)?,
            },
            Expr::Text {
                func: TextFn::Substr,
                args,
            } => {
                let values = args
                    .iter()
                    .map(|a| a.eval_in(row))
                    .collect::<SqlResult<Vec<_>>>()?;
                match values.as_slice() {
                    [Value::Text(s), Value::Int(from)] => {
                        let skip = (*from - 1).max(0) as usize;
                        Value::Text(s.chars().skip(skip).collect())
                    }
                    [Value::Text(s), Value::Int(from), Value::Int(count)] => {
                        if *count < 0 {
                            return Err(SqlError::new(
                                "22011",
                                "negative substring length not allowed",
                            ));
                        }
                        let end = from.saturating_add(*count);
                        let start = (*from).max(1);
                        let take = (end - start).max(0) as usize;
                        Value::Text(s.chars().skip((start - 1) as usize).take(take).collect())
                    }
                    _ => Value::Null,
                }
            }
            Expr::Math { func, expr } => match expr.eval_in(row)? {
                Value::Float(f) => Value::Float(match func {
                    MathFn::Ceil => f.ceil(),
                    MathFn::Floor => f.floor(),
                    MathFn::Round => f.round_ties_even(),
                }),
                Value::Int(i) => Value::Float(i as f64),
                _ => Value::Null,
            },
            Expr::ConcatAll(args) => {
                let mut out = String::new();
                for (arg, ty) in args {
                    if let Some(text) = arg.eval_in(row)?.to_pg_text(*ty) {
                        out.push_str(&text);
                    }
                }
                Value::Text(out)
            }
            Expr::Text { func, args } => {
                let mut texts = Vec::with_capacity(args.len());
                for arg in args {
                    match arg.eval_in(row)? {
                        Value::Text(text) => texts.push(text),
                        _ => return Ok(Value::Null),
                    }
                }
                match (func, texts.as_slice()) {
                    (TextFn::Lower, [s]) => Value::Text(s.to_lowercase()),
                    (TextFn::Upper, [s]) => Value::Text(s.to_uppercase()),
                    (TextFn::Length { blank_padded }, [s]) => {
                        let s = if *blank_padded {
                            s.trim_end_matches(' ')
                        } else {
                            s
                        };
                        Value::Int(s.chars().count() as i64)
                    }
                    (TextFn::Replace, [s, from, _]) if from.is_empty() => Value::Text(s.clone()),
                    (TextFn::Replace, [s, from, to]) => Value::Text(s.replace(from.as_str(), to)),
                    (TextFn::Strpos, [s, sub]) => Value::Int(match s.find(sub.as_str()) {
                        Some(byte) => s[..byte].chars().count() as i64 + 1,
                        None => 0,
                    }),
                    (TextFn::Trim { leading, trailing }, [s, chars]) => {
                        let set: Vec<char> = chars.chars().collect();
                        let mut t = s.as_str();
                        if *leading {
                            t = t.trim_start_matches(|c| set.contains(&c));
                        }
                        if *trailing {
                            t = t.trim_end_matches(|c| set.contains(&c));
                        }
                        Value::Text(t.to_string())
                    }
                    _ => return Err(SqlError::new(sqlstate::INTERNAL_ERROR, "bad arguments")),
                }
            }
            Expr::Like {
                expr,
                pattern,
                escape,
                case_insensitive,
                negated,
                pad,
            } => match (expr.eval_in(row)?, pattern.eval_in(row)?) {
                (Value::Text(mut text), Value::Text(pattern)) => {
                    if let Some(n) = pad {
                        let missing = (*n as usize).saturating_sub(text.chars().count());
                        text.extend(std::iter::repeat_n(' ', missing));
                    }
                    let (text, pattern) = match case_insensitive {
                        true => (text.to_lowercase(), pattern.to_lowercase()),
                        false => (text, pattern),
                    };
                    let chars: Vec<char> = text.chars().collect();
                    Value::Bool(like_matches(&chars, &pattern, *escape)? != *negated)
                }
                _ => Value::Null,
            },
            Expr::DistinctFrom {
                left,
                right,
                blank_padded,
                negated,
            } => {
                let (l, r) = (left.eval_in(row)?, right.eval_in(row)?);
                let same = match (l.is_null(), r.is_null()) {
                    (true, true) => true,
                    (false, false) => {
                        compare_values(&l, &r, *blank_padded) == Some(Ordering::Equal)
                    }
                    _ => false,
                };
                // IS DISTINCT FROM is true when they differ; IS NOT DISTINCT FROM when same.
                Value::Bool(same == *negated)
            }
            Expr::Extreme { args, greatest } => {
                let mut best = Value::Null;
                for arg in args {
                    let value = arg.eval_in(row)?;
                    if value.is_null() {
                        continue;
                    }
                    let better = match best.sql_cmp(&value) {
                        None => true,
                        Some(o) => (o == Ordering::Less) == *greatest && o != Ordering::Equal,
                    };
                    if better {
                        best = value;
                    }
                }
                best
            }
            Expr::Outer { .. } | Expr::AggregateRef(_) | Expr::SubqueryRef(_) => {
                return Err(SqlError::new(
                    sqlstate::INTERNAL_ERROR,
                    format!("unplanned expression {self:?}"),
                ));
            }
            Expr::Abs { expr, ty } => match expr.eval_in(row)? {
                Value::Int(v) => {
                    let v = v.checked_abs().ok_or_else(|| range_error(*ty))?;
                    convert(Value::Int(v), SqlType::BigInt, *ty, false)
                        .map_err(|_| range_error(*ty))?
                }
                Value::Float(v) => Value::Float(v.abs()),
                other => other,
            },
        })
    }

    /// Evaluates as a WHERE condition: true keeps the row, false and NULL drop it.
    pub fn is_true(&self, row: &[Value]) -> SqlResult<bool> {
        Ok(matches!(self.eval(row)?, Value::Bool(true)))
    }

    /// [`Expr::is_true`] over columns computed as they are read.
    pub fn is_true_in(&self, row: &dyn Columns) -> SqlResult<bool> {
        Ok(matches!(self.eval_in(row)?, Value::Bool(true)))
    }

    /// The conjuncts of an AND tree.
    pub fn conjuncts(&self) -> Vec<&Expr> {
        match self {
            Expr::And(l, r) => {
                let mut out = l.conjuncts();
                out.extend(r.conjuncts());
                out
            }
            other => vec![other],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::like_matches;

    fn like(text: &str, pattern: &str) -> bool {
        let chars: Vec<char> = text.chars().collect();
        like_matches(&chars, pattern, Some('\\')).expect("a valid pattern")
    }

    #[test]
    fn like_patterns_match_as_in_postgresql() {
        assert!(like("abc", "a%c"));
        assert!(like("abc", "%"));
        assert!(like("", "%"));
        assert!(!like("", "_"));
        assert!(like("a%c", "a\\%c"));
        assert!(!like("abc", "a\\%c"));
        assert!(like("mississippi", "%iss%ppi"));
        assert!(!like("mississippi", "%iss%ppx"));
        assert!(like("naïve", "na_ve"));
        // Many stars over a long text that does not match: quadratic at worst, not
        // exponential.
        let long = "a".repeat(5_000);
        assert!(!like(&long, "%a%a%a%a%a%a%a%a%b"));
    }
}
