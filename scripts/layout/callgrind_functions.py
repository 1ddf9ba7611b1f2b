"""Prints, in first-run order, the mangled name of every function of one object
that ran in a callgrind profile (valgrind --tool=callgrind --demangle=no).

usage: callgrind_functions.py OBJECT_SUBSTRING PROFILE...

callgrind's format compresses names: "fn=(12) name" defines id 12, a later
"fn=(12)" refers to it; "ob=" and "cob=" do the same for objects. Local symbols
that occur more than once carry a "'N" suffix there, which BOLT does not use.
"""
import re
import sys

REF = re.compile(r"\((\d+)\)(?: (.*))?")


def resolve(rest, table):
    m = REF.match(rest)
    if not m:
        return rest
    if m.group(2) is not None:
        table[m.group(1)] = m.group(2)
    return table.get(m.group(1), "")


def functions(path, obj):
    objects, names = {}, {}
    current_object = ""
    for line in open(path, errors="replace"):
        if line.startswith("ob="):
            current_object = resolve(line[3:].rstrip("\n"), objects)
        elif line.startswith("cob="):
            resolve(line[4:].rstrip("\n"), objects)
        elif line.startswith("cfn="):
            resolve(line[4:].rstrip("\n"), names)
        elif line.startswith("fn="):
            name = resolve(line[3:].rstrip("\n"), names)
            if obj in current_object:
                yield re.sub(r"'\d+$", "", name)


def main():
    obj, profiles = sys.argv[1], sys.argv[2:]
    seen = set()
    for path in profiles:
        for name in functions(path, obj):
            if name and name not in seen:
                seen.add(name)
                print(name)


if __name__ == "__main__":
    main()
