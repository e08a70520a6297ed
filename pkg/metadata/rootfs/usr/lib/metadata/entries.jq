# The user data (read with --slurp) as one line per action, tab-separated, for
# /usr/bin/metadata to carry out in order (parents before their entries):
#   dir  PATH PERM          file PATH PERM BASE64       bad  PATH-AS-JSON REASON
# PATH is relative to /run/config and made only of names that passed plain_name, so it holds
# no "..", no empty component and no tab or newline.  An entry that is bad is skipped with
# everything under it.

def bad($path; $why): "bad\t\($path | @json)\t\($why)";

# One path component: no "/", not "." or "..", not empty, no control characters.
def plain_name: length > 0 and . != "." and . != ".." and (explode | all(. > 31 and . != 127 and . != 47));

# Permission bits only, in octal ("644", "0600"): no set-id or sticky bits.
def perm_ok: type == "string" and test("^0?[0-7]{1,3}$");

def actions($prefix):
  to_entries[] | .key as $name | .value as $entry | ($prefix + $name) as $path
  | if ($name | plain_name | not) then bad($path; "is not a plain file name")
    elif ($entry | type) != "object" then bad($path; "is not an object with content or entries")
    elif ($entry | has("content")) and ($entry | has("entries")) then bad($path; "has both content and entries")
    elif ($entry | has("perm")) and ($entry.perm | perm_ok | not) then bad($path; "perm \($entry.perm | tojson) is not octal permission bits")
    elif ($entry | has("content")) then
      if ($entry.content | type) != "string" then bad($path; "content is not a string")
      else "file\t\($path)\t\($entry.perm // "0644")\t\($entry.content | @base64)" end
    elif ($entry | has("entries")) then
      if ($entry.entries | type) != "object" then bad($path; "entries is not an object")
      else "dir\t\($path)\t\($entry.perm // "0755")", ($entry.entries | actions($path + "/")) end
    else bad($path; "has neither content nor entries") end;

if length != 1 then bad("."; "is not one JSON value")
elif (.[0] | type) != "object" then bad("."; "is not a JSON object")
else .[0] | actions("") end
