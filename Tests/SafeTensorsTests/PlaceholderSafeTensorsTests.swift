import Testing

@Test func placeholderSafeTensorsTests() { #expect(Bool(true)) }
