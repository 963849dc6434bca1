"""A package, so that pytest imports the test files here as runtime.<name> instead of putting tests/runtime on
sys.path, where its tensorrt/ folder (the fakes) would be found by `import tensorrt` as a namespace package."""
