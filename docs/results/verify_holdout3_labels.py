"""Checks every label of src/mimir/data/quality_holdout3.jsonl with sympy alone (not the engine).

Each question is solved here by hand-written sympy, and each student message is transcribed by hand
into sympy (M below); the verdict that follows must equal the label. Run from the repository root:
    python docs/results/verify_holdout3_labels.py
"""
import json
from sympy import *
x,y,C=symbols('x y C')
S_=lambda s: sympify(s)
# question -> (kind, truth); kinds: num, set (solutions), sys (dict), expr (equal as expr), factor (equal and factored), anti (derivative equals integrand)
Q = {
"What is 23 × 4?": ("num", 23*4),
"Calculate 250 - 87 + 14.": ("num", 250-87+14),
"**Practice question:** What is 9 * 6 - 4 * 5?": ("num", 9*6-4*5),
"Good. Next: what is 2^5 + 3?": ("num", 2**5+3),
"Find the mean of 7, 11, 14 and 20.": ("num", Rational(7+11+14+20,4)),
"What is 156 ÷ 13?": ("num", Rational(156,13)),
"What is 3/5 + 1/10?": ("num", Rational(3,5)+Rational(1,10)),
"What is 5/8 - 1/2?": ("num", Rational(5,8)-Rational(1,2)),
"What is 2/5 × 3/4?": ("num", Rational(2,5)*Rational(3,4)),
"What is 7/9 ÷ 7/3?": ("num", Rational(7,9)/Rational(7,3)),
"What is 3/4 of 28?": ("num", Rational(3,4)*28),
"**Practice question:** What is 1/4 + 2/5? Give your answer as a fraction.": ("num", Rational(1,4)+Rational(2,5)),
"What is 45% of 80?": ("num", Rational(45,100)*80),
"Not quite: check where the decimal point goes. Try again: what is 45% of 80?": ("num", Rational(45,100)*80),
"**Practice question:** What is 8% of 150?": ("num", Rational(8,100)*150),
"21 is what percent of 84?": ("num", Rational(21,84)*100),
"Convert 3/8 to a percentage.": ("num", Rational(3,8)*100),
"A bike costs $240 and is 15% off. What is the sale price?": ("num", 240*(1-Rational(15,100))),
"Solve 4x + 9 = 37.": ("set", solveset(Eq(4*x+9,37),x)),
"Solve 6 - 3x = 21.": ("set", solveset(Eq(6-3*x,21),x)),
"Close, but check the sign when you divide by -3.": ("set", solveset(Eq(6-3*x,21),x)),
"**Practice question:** Solve 2(x + 5) = 4x - 6 for x.": ("set", solveset(Eq(2*(x+5),4*x-6),x)),
"Solve x/3 + 4 = 10.": ("set", solveset(Eq(x/3+4,10),x)),
"Solve 1.5x - 2 = 7.": ("set", solveset(Eq(Rational(3,2)*x-2,7),x)),
"Sure! Solve 9x - 7 = 5x + 13.": ("set", solveset(Eq(9*x-7,5*x+13),x)),
"Solve x^2 - 9x + 20 = 0.": ("set", solveset(x**2-9*x+20,x)),
"Solve x^2 + 2x - 24 = 0.": ("set", solveset(x**2+2*x-24,x)),
"Solve x^2 = 121.": ("set", solveset(x**2-121,x)),
"**Practice question:** Solve 2x^2 - 8x = 0. Give both solutions.": ("set", solveset(2*x**2-8*x,x)),
"Solve 3x^2 + 5x - 2 = 0.": ("set", solveset(3*x**2+5*x-2,x)),
"Find the roots of x^2 - 6x + 9 = 0.": ("set", solveset(x**2-6*x+9,x)),
"Solve the system 2x + y = 11 and x - y = 1.": ("sys", solve([2*x+y-11,x-y-1],[x,y])),
"Solve simultaneously: x + 3y = 14 and 2x - y = 7.": ("sys", solve([x+3*y-14,2*x-y-7],[x,y])),
"**Practice question:** Solve the system 4x - 3y = 6 and x + y = 5.": ("sys", solve([4*x-3*y-6,x+y-5],[x,y])),
"Find x and y if y = 2x + 1 and 3x + y = 16.": ("sys", solve([y-2*x-1,3*x+y-16],[x,y])),
"Simplify 3(2x + 5) - 4x.": ("expr", 3*(2*x+5)-4*x),
"Simplify (x^2 - 16)/(x + 4).": ("expr", (x**2-16)/(x+4)),
"Expand (x + 7)(x - 2).": ("expr", (x+7)*(x-2)),
"Expand (2x - 5)^2.": ("expr", (2*x-5)**2),
"**Practice question:** Factor x^2 + 8x + 15.": ("factor", x**2+8*x+15),
"Factor 4x^2 - 25.": ("factor", 4*x**2-25),
"Factorise 10x^2 - 15x fully.": ("factor", 10*x**2-15*x),
"Find the derivative of 4x^3 + 2x^2 - 9x.": ("expr", diff(4*x**3+2*x**2-9*x,x)),
"Differentiate x^2 e^x.": ("expr", diff(x**2*exp(x),x)),
"What is d/dx of sqrt(x)?": ("expr", diff(sqrt(x),x)),
"**Practice question:** Find the derivative of 7x^2 - 3x + 8.": ("expr", diff(7*x**2-3*x+8,x)),
"Sure. Differentiate cos(3x).": ("expr", diff(cos(3*x),x)),
"Find f'(x) if f(x) = (2x + 1)^4.": ("expr", diff((2*x+1)**4,x)),
"Differentiate ln(5x).": ("expr", diff(log(5*x),x)),
"Integrate 10x^4 dx.": ("anti", 10*x**4),
"Find the indefinite integral of 3x^2 - 4x + 1.": ("anti", 3*x**2-4*x+1),
"Find the antiderivative of sin(x).": ("anti", sin(x)),
"Integrate 3/x^2 dx.": ("anti", 3/x**2),
"Evaluate the integral of 3x^2 from 1 to 2.": ("num", integrate(3*x**2,(x,1,2))),
"Calculate \\int_1^3 (4x - 1) \\, dx.": ("num", integrate(4*x-1,(x,1,3))),
"**Practice question:** Evaluate the integral of 2x + 3 from 0 to 4.": ("num", integrate(2*x+3,(x,0,4))),
"Evaluate \\int_0^{1} e^x \\, dx.": ("num", integrate(exp(x),(x,0,1))),
"Find the limit of (x^2 - 36)/(x - 6) as x approaches 6.": ("num", limit((x**2-36)/(x-6),x,6)),
"What is \\lim_{x \\to 4} (2x + 7)?": ("num", limit(2*x+7,x,4)),
"Find the limit of (5x^2 - x)/(2x^2 + 3) as x approaches infinity.": ("num", limit((5*x**2-x)/(2*x**2+3),x,oo)),
"Find the limit of (1 - cos(x))/x as x approaches 0.": ("num", limit((1-cos(x))/x,x,0)),
"What is the capital of Japan?": ("none", None),
}
# my own transcription of each student message into sympy (None: no answer given)
M = {
"92":"92","82":"82","it's 92 I think":"92","I'm not sure":None,"177":"177","149":"149","34":"34","250":"250",
"35":"35","13":"13","52":"52","13.0":"13.0","12":"12","11":"11","7/10":"7/10","4/15":"4/15","14/20":"14/20",
"1/8":"1/8","4/6":"4/6","0.125":"0.125","3/10":"3/10","5/9":"5/9","0.3":"0.3","1/3":"1/3","49/27":"49/27",
"21":"21","84":"84","13/20":"13/20","3/9":"3/9","0.65":"0.65","36":"36","3.6":"3.6","36.0":"36.0","18":"18",
"25%":"25","4%":"4","25 percent":"25","37.5%":"37.5","3.75%":"3.75","$204":"204","$36":"36",
"x = 7":"{7}","x = 11.5":"{23/2}","x equals seven":"{7}","do I subtract 9 first?":None,
"x = -5":"{-5}","x = 5":"{5}","x=−5":"{-5}","8":"{8}","x = 2":"{2}","x = 18":"{18}","x = 6":"{6}","x = 3.33":"{333/100}",
"x = 1.5":"{3/2}","is it 5?":"{5}",
"x = 4 or x = 5":"{4,5}","x = -4, x = -5":"{-4,-5}","5 and 4":"{4,5}","x = 4, x = -6":"{4,-6}","x = -4, x = 6":"{-4,6}",
"x = ±11":"{11,-11}","11":"{11}","+/- 11":"{11,-11}","x = 0 and x = 4":"{0,4}","x = 4":"{4}",
"x = 1/3 or x = -2":"{1/3,-2}","x = -1/3, x = 2":"{-1/3,2}","x = 3":"{3}","x = -3":"{-3}",
"x = 4, y = 3":"(4,3)","(3, 4)":"(3,4)","y=3 and x=4":"(4,3)","(5, 3)":"(5,3)","x = 5, y = -3":"(5,-3)",
"x = 3, y = 2":"(3,2)","x = 2, y = 3":"(2,3)","(x, y) = (3, 2)":"(3,2)","x=3, y=7":"(3,7)","x = 3, y = 6":"(3,6)",
"2x + 15":"2*x+15","2x + 5":"2*x+5","15 + 2x":"15+2*x","x - 4":"x-4","x + 4":"x+4",
"x^2 + 5x - 14":"x**2+5*x-14","x^2 - 14":"x**2-14","x² + 5x − 14":"x**2+5*x-14","how do I start?":None,
"4x^2 - 20x + 25":"4*x**2-20*x+25","4x^2 + 25":"4*x**2+25","4x^2 - 25":"4*x**2-25",
"(x + 3)(x + 5)":"(x+3)*(x+5)","(x + 2)(x + 6)":"(x+2)*(x+6)","(x+5)(x+3)":"(x+5)*(x+3)",
"(2x - 5)(2x + 5)":"(2*x-5)*(2*x+5)","(2x - 5)^2":"(2*x-5)**2","5x(2x - 3)":"5*x*(2*x-3)","5x(2x - 15)":"5*x*(2*x-15)",
"12x^2 + 4x - 9":"12*x**2+4*x-9","12x^2 + 4x":"12*x**2+4*x","dy/dx = 12x² + 4x − 9":"12*x**2+4*x-9",
"2x e^x + x^2 e^x":"2*x*exp(x)+x**2*exp(x)","2x e^x":"2*x*exp(x)","e^x(x^2 + 2x)":"exp(x)*(x**2+2*x)",
"1/(2sqrt(x))":"1/(2*sqrt(x))","(1/2)x^(-1/2)":"(1/2)*x**(-1/2)","2sqrt(x)":"2*sqrt(x)",
"14x - 3":"14*x-3","7x - 3":"7*x-3","-3sin(3x)":"-3*sin(3*x)","3sin(3x)":"3*sin(3*x)","-sin(3x)":"-sin(3*x)",
"8(2x + 1)^3":"8*(2*x+1)**3","4(2x + 1)^3":"4*(2*x+1)**3","1/x":"1/x","5/x":"5/x",
"2x^5 + C":"2*x**5+C","40x^3 + C":"40*x**3+C","x^3 - 2x^2 + x + C":"x**3-2*x**2+x+C","x^3 - 4x^2 + x + C":"x**3-4*x**2+x+C",
"x³ − 2x² + x + C":"x**3-2*x**2+x+C","-cos(x) + C":"-cos(x)+C","cos(x) + C":"cos(x)+C","wait what's an antiderivative":None,
"-3/x + C":"-3/x+C","-6/x^3 + C":"-6/x**3+C","7":"7","9":"9","14":"14","16":"16","28":"28","e - 1":"E-1","e":"E",
"0":"0","it doesn't exist":"nan","15":"15","5/2":"5/2","2.5":"2.5","1":"1","Tokyo":None,
}
bad=0
for line in open('src/mimir/data/quality_holdout3.jsonl'):
    c=json.loads(line)
    if c['kind']!='verdict': continue
    q=c['history'][-1]['content']; kind,truth=Q[q]; m=c['message']; lab=c['expect']['verdict']
    s=M[m]
    if s is None or kind=='none': got='unknown'
    else:
        if kind=='num' and s.startswith('{'): s=s.strip('{}')
        if kind=='set' and not s.startswith('{'): s='{'+s+'}'
        if kind in('set',):
            v=S_(s) if not s.startswith('{') else FiniteSet(*[nsimplify(S_(t)) for t in s.strip('{}').split(',')])
            ok = v==truth
        elif kind=='num':
            ok = s!='nan' and simplify(S_(s)-truth)==0
        elif kind=='sys':
            a,b=S_(s); ok = truth=={x:a,y:b}
        elif kind=='expr':
            ok = simplify(S_(s)-truth)==0
        elif kind=='factor':
            e=S_(s); ok = expand(e-truth)==0 and isinstance(e,Mul) and len(factor_list(e)[1])+ (1 if factor_list(e)[0]!=1 else 0) >=2
            ok = ok and factor(truth)==factor(e)
        elif kind=='anti':
            ok = simplify(diff(S_(s),x)-truth)==0
        got='correct' if ok else 'incorrect'
    flag='' if got==lab else '   <<<<< MISMATCH'
    if flag: bad+=1
    print(f'{lab:9} {got:9} {q[:45]!r:48} {m!r}{flag}')
print('mismatches',bad)
assert bad == 0

# The response cases: the answers their no_leak strings hold.
assert solve(8*x+3-35,x)==[4]
assert expand((x+3)*(x+7))==x**2+10*x+21
assert diff(5*x**4-2*x,x)==20*x**3-2
assert solve([x+y-9,x-y-3],[x,y])=={x:6,y:3}
assert set(solve(x**2-8*x+15,x))=={3,5}
assert Rational(3,7)+Rational(1,2)==Rational(13,14)
assert limit((x**2-4)/(x-2),x,2)==4
assert 12*13==156 and Rational(65,100)*120==78
print("responses ok")
