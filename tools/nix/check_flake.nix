# Evaluates flake.nix's outputs against the stub nixpkgs and returns a summary the tests compare.
# nix-instantiate --eval --strict --json --readonly-mode tools/nix/check_flake.nix
let
  flake = import ../../flake.nix;
  nixpkgs = {
    outPath = ./stub_nixpkgs;
    lib = import ./stub_nixpkgs/lib.nix;
  };
  out = flake.outputs { self = out; inherit nixpkgs; };
  describe = shell: {
    inherit (shell) name HERD_LOCK system shellHook;
    inherit (shell.config) allowUnfree cudaSupport cudaCapabilities;
    packages = map (p: p.pname) shell.packages;
  };
in
{
  inputs = flake.inputs;
  devShells = builtins.mapAttrs (system: shells: builtins.mapAttrs (_: describe) shells) out.devShells;
}
