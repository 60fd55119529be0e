# A stand-in for nixpkgs with just what flake.nix uses, for evaluating the flake offline.
# Each package is a record naming itself; mkShell returns its arguments plus the config it was built with.
{ system, config ? { } }:
let
  pkg = name: { pname = name; outPath = "/nix/store/00000000000000000000000000000000-${name}"; };
  lib = import ./lib.nix;
in
{
  inherit lib;
  mkShell = args: args // { inherit system config; };
  python311 = pkg "python3.11";
  bazel_4 = pkg "bazel-4";
  gcc = pkg "gcc";
  git = pkg "git";
  nix = pkg "nix";
  cudaPackages_12 = {
    cuda_nvcc = pkg "cuda_nvcc";
    cuda_cudart = pkg "cuda_cudart";
    cudnn = pkg "cudnn";
  };
}
