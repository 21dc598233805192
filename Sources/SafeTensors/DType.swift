/// The 22 element types of the safetensors format, declared in the reference's
/// "increasing alignment" order. The writer lays tensors out in the reverse of
/// this order (largest alignment first), so ``orderIndex`` is part of the format.
public enum DType: String, CaseIterable, Sendable, Codable {
    case BOOL, F4, F6_E2M3, F6_E3M2, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0, F8_E4M3FNUZ, F8_E5M2FNUZ
    case I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64

    /// Size of one element in bits (4 and 6 for the sub-byte float formats).
    public var bitCount: Int {
        switch self {
        case .F4: return 4
        case .F6_E2M3, .F6_E3M2: return 6
        case .BOOL, .U8, .I8, .F8_E5M2, .F8_E4M3, .F8_E8M0, .F8_E4M3FNUZ, .F8_E5M2FNUZ: return 8
        case .I16, .U16, .F16, .BF16: return 16
        case .I32, .U32, .F32: return 32
        case .C64, .F64, .I64, .U64: return 64
        }
    }

    /// Position in the reference's enum; tensors are written in descending order of it.
    public var orderIndex: Int { DType.allCases.firstIndex(of: self)! }

    /// The floating-point types graft can convert between and do arithmetic on.
    public var isConvertibleFloat: Bool {
        switch self {
        case .F16, .BF16, .F32, .F64: return true
        default: return false
        }
    }

    /// Any floating-point type, including the 8/6/4-bit ones graft only carries through.
    public var isFloatingPoint: Bool {
        switch self {
        case .F4, .F6_E2M3, .F6_E3M2, .F8_E5M2, .F8_E4M3, .F8_E8M0, .F8_E4M3FNUZ, .F8_E5M2FNUZ,
            .F16, .BF16, .F32, .F64, .C64:
            return true
        default: return false
        }
    }

    /// Parses a dtype name exactly as the format spells it (case-sensitive).
    public init?(name: some StringProtocol) { self.init(rawValue: String(name)) }

    /// Parses the user-facing spellings used on the command line: fp16, f16, half, bf16,
    /// fp32, f32, float, fp64, f64, double (case-insensitive), or a format name.
    public init?(userSpelling s: String) {
        switch s.lowercased() {
        case "fp16", "f16", "half", "float16": self = .F16
        case "bf16", "bfloat16": self = .BF16
        case "fp32", "f32", "float", "float32": self = .F32
        case "fp64", "f64", "double", "float64": self = .F64
        default:
            guard let d = DType(rawValue: s.uppercased()) else { return nil }
            self = d
        }
    }
}
