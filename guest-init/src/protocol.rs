//! The smoke-test result-line format shared by guest-init (writer) and test-vm (reader).
