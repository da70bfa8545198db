"""The query language of dynamic rules: lexer, parser, AST and compiler to closures.

``parse(text, macros, lists)`` gives an AST (:mod:`.ast`); ``compile_condition`` turns it
into a predicate over a flat ECS event. Sigma rules are translated into the same AST so both
kinds of rule share one evaluator and one index.
"""

from threatseer.hub.rules.query.ast import And, Cmp, Const, Field, Node, Not, Or
from threatseer.hub.rules.query.compiler import compile_condition
from threatseer.hub.rules.query.errors import QueryError
from threatseer.hub.rules.query.parser import parse

__all__ = [
    "And", "Cmp", "Const", "Field", "Node", "Not", "Or", "QueryError", "compile_condition",
    "parse",
]
