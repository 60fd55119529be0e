{
  description = "herd: an open, reproducible implementation of the Llama 3 recipe";

  # Pinned in flake.lock. Python packages do not come from nixpkgs: the shell builds .venv from the
  # same hash-pinned lock that ./bazelw uses, so a Nix shell and a plain Debian machine run identical
  # package versions.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-23.05";

  outputs = { self, nixpkgs }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems f;

      pkgsFor = system: cuda: import nixpkgs {
        inherit system;
        config = {
          allowUnfree = true; # the CUDA toolkit's licence
          cudaSupport = cuda;
          cudaCapabilities = [ "9.0" ]; # H100 / H200
        };
      };

      shellFor = system: cuda:
        let
          pkgs = pkgsFor system cuda;
          cuda_pkgs = pkgs.cudaPackages_12;
        in
        pkgs.mkShell {
          name = if cuda then "herd-cuda" else "herd";
          packages = [
            pkgs.python311
            pkgs.bazel_4
            pkgs.gcc
            pkgs.git
            pkgs.nix
          ] ++ pkgs.lib.optionals cuda [
            cuda_pkgs.cuda_nvcc
            cuda_pkgs.cuda_cudart
            cuda_pkgs.cudnn
          ];
          # The GPU lock pins PyPI's CUDA build of torch 2.13.0; the CPU lock its CPU build.
          HERD_LOCK = if cuda
            then "third_party/python/requirements_gpu_lock.txt"
            else "third_party/python/requirements_lock.txt";
          # PyPI has no "+cpu" torch builds: take the CPU lock's torch from PyTorch's own index.
          HERD_PIP_ARGS = if cuda then "" else "--extra-index-url https://download.pytorch.org/whl/cpu";
          shellHook = ''
            export HERD_PYTHON=${pkgs.python311}/bin/python3.11
            ${pkgs.lib.optionalString cuda ''
              export CUDA_HOME=${cuda_pkgs.cuda_nvcc}
              # The NVIDIA driver's libcuda comes from the host (NixOS: /run/opengl-driver).
              export LD_LIBRARY_PATH=/run/opengl-driver/lib''${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
            ''}
            ./bazelw version >/dev/null && . .venv/bin/activate
          '';
        };
    in
    {
      devShells = forAllSystems (system: {
        default = shellFor system false;
        cuda = shellFor system true;
      });
    };
}
