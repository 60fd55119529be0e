# The nixpkgs.lib functions flake.nix uses, with nixpkgs' semantics.
{
  genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
  optionals = cond: xs: if cond then xs else [ ];
  optionalString = cond: s: if cond then s else "";
}
